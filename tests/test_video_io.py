"""Decoding (VP9 WebM, MP4, JPEG folders), encoding (fps kept, even sizes, same bytes for the same frames),
clear errors on corrupt and truncated files, and the frame-sampling metadata."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from cuelab.video.io import FrameSpec, Video, VideoError, find_video, read_video, sample_frames, write_video
from tests.conftest import fixture_path


def smooth_frames(n=12, h=48, w=64, seed=0) -> np.ndarray:
    """Moving colour gradients: content the codec keeps within a few levels at crf 18."""
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 6, 3)
    out = []
    for t in range(n):
        ch = [127 + 100 * np.sin(xx / 9 + yy / 13 + phase[c] + t / 3) for c in range(3)]
        out.append(np.stack(ch, -1).clip(0, 255).astype(np.uint8))
    return np.stack(out)


def pyav_rgb(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])])


def test_decodes_the_real_ssv2_webm():
    path = fixture_path("ssv2", "166766.webm")
    v = read_video(path)
    assert (v.n_frames, v.height, v.width, v.fps) == (49, 240, 427, 12.0)  # odd width, VP9
    assert v.frames.dtype == np.uint8 and v.frames.shape[-1] == 3
    ref = pyav_rgb(path)  # FFmpeg's own conversion: the fast OpenCV path must agree with it
    assert np.abs(v.frames.astype(int) - ref).mean() < 1.5


def test_mp4_round_trip_keeps_fps_and_pads_to_even_size(tmp_path):
    frames = smooth_frames(n=15, h=25, w=33)
    write_video(tmp_path / "a.mp4", frames, fps=15)
    v = read_video(tmp_path / "a.mp4")
    assert v.fps == 15.0 and v.n_frames == 15
    assert (v.height, v.width) == (26, 34), "odd sizes are padded to even for yuv420p"
    gray = lambda fs: np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in fs]).astype(int)
    # luma is kept to a level or two at crf 18; chroma is stored at half resolution, so compare it more loosely
    assert np.abs(gray(v.frames[:, :25, :33]) - gray(frames)).mean() < 2.5
    assert np.abs(v.frames[:, :25, :33].astype(int) - frames).mean() < 10
    with av.open(str(tmp_path / "a.mp4")) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"


@pytest.mark.parametrize("fps", [12, 29.97, 8])
def test_encoder_keeps_the_source_fps(tmp_path, fps):
    write_video(tmp_path / "a.mp4", smooth_frames(n=6), fps=fps)
    assert read_video(tmp_path / "a.mp4").fps == pytest.approx(fps, rel=1e-3)


def test_colours_survive_encode_and_decode(tmp_path):
    colours = [(230, 25, 25), (30, 90, 255), (20, 200, 60), (255, 255, 255), (0, 0, 0), (128, 128, 128)]
    frames = np.zeros((4, 32, 32 * len(colours), 3), np.uint8)
    for i, c in enumerate(colours):
        frames[:, :, 32 * i:32 * (i + 1)] = c
    write_video(tmp_path / "c.mp4", frames, 12)
    back = read_video(tmp_path / "c.mp4").frames
    for i, c in enumerate(colours):
        got = back[:, 8:24, 32 * i + 8:32 * i + 24].reshape(-1, 3).mean(0)
        assert np.abs(got - np.array(c)).max() < 6, (c, got)


def test_same_frames_give_byte_identical_files(tmp_path):
    frames = smooth_frames()
    write_video(tmp_path / "a.mp4", frames, 12)
    write_video(tmp_path / "b.mp4", iter(list(frames)), 12)  # an iterable of frames streams the same bytes
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
    assert not list(tmp_path.glob(".*")), "no temp file left behind"


def test_write_refuses_frames_of_different_sizes(tmp_path):
    with pytest.raises(ValueError, match="frame 1"):
        write_video(tmp_path / "x.mp4", [np.zeros((8, 8, 3), np.uint8), np.zeros((10, 8, 3), np.uint8)], 12)
    assert not list(tmp_path.iterdir()), "a failed write leaves neither output nor temp file"


def test_jpeg_folder_is_a_12fps_video_in_rgb(tmp_path):
    folder = tmp_path / "vid7"
    folder.mkdir()
    for i in range(5):
        img = np.zeros((24, 40, 3), np.uint8)
        img[..., 2] = 200  # red in OpenCV's BGR order
        cv2.imwrite(str(folder / f"{i + 1:04d}.jpg"), img)
    (folder / "notes.txt").write_text("not a frame")
    assert find_video(tmp_path, "vid7") == folder.resolve()
    v = read_video(find_video(tmp_path, "vid7"))
    assert (v.n_frames, v.fps, v.height, v.width) == (5, 12.0, 24, 40)
    assert v.frames[..., 0].mean() > 180 and v.frames[..., 2].mean() < 20, "frames are RGB"


def test_jpeg_fixture_folder_decodes():
    frames_dir = fixture_path("something-else", "frames")
    v = read_video(find_video(frames_dir, "2"))
    assert v.n_frames == 48 and v.height == 240 and v.fps == 12.0


def test_find_video_prefers_files_and_names_the_missing_video(tmp_path):
    write_video(tmp_path / "5.mp4", smooth_frames(n=2), 12)
    assert find_video(tmp_path, "5").name == "5.mp4"
    with pytest.raises(VideoError) as e:
        find_video(tmp_path, "6")
    assert e.value.video_id == "6"


def test_truncated_webm_is_an_error_not_a_short_video(tmp_path):
    data = fixture_path("ssv2", "166766.webm").read_bytes()
    cut = tmp_path / "166766.webm"
    cut.write_bytes(data[: int(len(data) * 0.7)])  # decodes its first part without any FFmpeg error
    with pytest.raises(VideoError, match="truncated") as e:
        read_video(cut)
    assert e.value.video_id == "166766" and e.value.file == str(cut)


@pytest.mark.parametrize("content", [b"", b"\x00" * 1000, b"ftypisom" + b"\x13" * 500])
def test_corrupt_files_raise_video_error(tmp_path, content):
    p = tmp_path / "bad.mp4"
    write_video(tmp_path / "good.mp4", smooth_frames(n=6), 12)
    p.write_bytes(content or (tmp_path / "good.mp4").read_bytes()[:300])
    with pytest.raises(VideoError) as e:
        read_video(p)
    assert e.value.video_id == "bad"


def test_sample_frames_returns_frames_with_their_metadata():
    video = Video(smooth_frames(n=48, h=120, w=160), fps=12.0, path="x/clip.mp4")
    s = sample_frames(video, FrameSpec(fps=2.0, min_frames=4, max_frames=32, total_pixels=None,
                                       max_pixels_per_frame=128 * 160))
    assert s.n == 8 and s.n % 2 == 0  # 4 s at 2 fps
    assert s.indices == sorted(s.indices) and s.indices[0] == 0 and s.indices[-1] == 47
    assert s.resized_height % 32 == 0 and s.resized_width % 32 == 0
    assert s.frames.shape == (8, s.resized_height, s.resized_width, 3)
    assert (s.width, s.height, s.source_fps, s.total_frames) == (160, 120, 12.0, 48)
    assert s.timestamps[1] == pytest.approx(s.indices[1] / 12.0)
    md = s.video_metadata()
    assert md.fps == 12.0 and md.total_num_frames == 48 and list(md.frames_indices) == s.indices
    short = sample_frames(Video(smooth_frames(n=3), 12.0, "s.mp4"), FrameSpec(min_frames=4))
    # a clip shorter than min_frames shows frames twice, spread evenly (each at its true time), not the last one
    assert short.indices == [0, 1, 1, 2] and short.video_metadata().frames_indices == [0, 1, 1, 2]
