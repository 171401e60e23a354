"""The frames the first study's vLLM server (num_frames 64, Qwen3-VL) gave the model, by clip length."""

from __future__ import annotations

import pytest

from cuelab.video.first_study_frames import study_eval_frames


def test_short_clip_is_sampled_at_2_fps_not_repeated_to_64():
    r = study_eval_frames(30)  # 2.5 s at 12 fps: int(2.5 * 2) = 5 frames, the last repeated for the 2-frame patch
    assert r.sampled_by == "processor"
    assert r.indices == [0, 7, 14, 22, 29, 29]  # linspace(0, 29, 5) rounded half to even: 14.5 -> 14
    assert r.prompt_seconds == [1.75, 9.0, 14.5]  # vLLM 0.11.0 divided by 2 (the sampling fps), not 12
    assert r.source_seconds == pytest.approx([7 / 24, 1.5, 29 / 12])


def test_a_64_frame_clip_is_also_resampled_by_the_processor():
    r = study_eval_frames(64)  # the loader keeps all 64, so it asks the processor to sample: int(64 / 12 * 2) = 10
    assert r.sampled_by == "processor"
    assert r.indices == [0, 7, 14, 21, 28, 35, 42, 49, 56, 63]
    assert r.prompt_seconds == [1.75, 8.75, 15.75, 22.75, 29.75]


def test_long_clip_keeps_64_frames_truncated_linspace():
    r = study_eval_frames(100)
    assert r.sampled_by == "loader" and len(r.indices) == 64 and len(set(r.indices)) == 64
    assert r.indices[:12] == [0, 1, 3, 4, 6, 7, 9, 11, 12, 14, 15, 17] and r.indices[-3:] == [95, 97, 99]
    # timestamps as if the 64 frames were evenly spaced over the clip's 8.33 s (the loader's fps: 7.68)
    assert len(r.prompt_seconds) == 32 and r.prompt_seconds[0] == pytest.approx(0.5 / 7.68)
    assert r.prompt_seconds[-1] == pytest.approx(62.5 / 7.68)


def test_the_jump_at_64_frames_and_tiny_clips():
    assert len(study_eval_frames(63).indices) == 10 and len(study_eval_frames(65).indices) == 64
    assert study_eval_frames(3).indices == [0, 1, 2, 2]  # at least 4 asked, at most the clip's 3, then padded
    assert study_eval_frames(2).indices == [0, 1]
    with pytest.raises(ValueError, match="needs 2"):  # one frame: the processor refused it
        study_eval_frames(1)
    assert len(study_eval_frames(30, num_frames=-1).indices) == 6  # num_frames -1: every frame, then 2 fps
