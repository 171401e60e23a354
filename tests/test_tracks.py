"""The tracks container (cuelab.tracks): validation on construction, clipping and its counts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cuelab.errors import DataError
from cuelab.tracks import HAND, VideoTracks


@pytest.mark.parametrize("tracks, words", [
    ({0: {0: (1, 1, 5, 5)}}, "not a string"),
    ({"0": {-1: (1, 1, 5, 5)}}, "integer >= 0"),
    ({"0": {1.0: (1, 1, 5, 5)}}, "integer >= 0"),
    ({"0": {True: (1, 1, 5, 5)}}, "integer >= 0"),
    ({"0": {0: (1, 1, 5)}}, "four numbers"),
    ({"0": {0: (1, math.nan, 5, 5)}}, "finite"),
    ({"0": {0: (1, 1, math.inf, 5)}}, "finite"),
    ({"0": {0: (6, 1, 5, 5)}}, "x2 >= x1"),
    ({"0": {0: (1, 6, 5, 5)}}, "y2 >= y1"),
    ({"0": [(1, 1, 5, 5)]}, "dict frame -> box"),
])
def test_bad_tracks_are_refused_naming_the_video(tracks, words):
    with pytest.raises(DataError, match=words) as e:
        VideoTracks("v7", tracks)
    assert e.value.video_id == "v7"


def test_valid_tracks_keep_their_values_as_given():
    tr = VideoTracks("v", {"1": {np.int64(3): (1, 2, 3, 4)}, "0": {0: (0.5, 0.5, 0.5, 0.5)}, HAND: {}})
    assert tr.tracks["1"][3] == (1, 2, 3, 4) and isinstance(tr.tracks["1"][3][0], int)
    assert tr.object_ids == ["0", "1", HAND] and tr.objects() == ["0", "1"]


def test_clipped_to_counts_clipped_and_dropped_boxes():
    tr = VideoTracks("v", {"0": {0: (-5.0, 2.0, 10.0, 8.0), 1: (2.0, 2.0, 4.0, 4.0)}, "1": {0: (30.0, 0.0, 40.0, 5.0)}})
    c = tr.clipped_to(20, 10)
    assert c.tracks == {"0": {0: (0.0, 2.0, 10.0, 8.0), 1: (2.0, 2.0, 4.0, 4.0)}}
    assert (c.clipped, c.outside, c.outside_objects) == (1, 1, ["1"])
