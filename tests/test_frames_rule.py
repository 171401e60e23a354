"""frames_eval.rule first_study_vllm: sample_frames gives the frames the first study's vLLM 0.11 server gave
Qwen3-VL (cuelab.video.first_study_frames), with no padding to 64, and every consumer (transformers' processor,
vLLM offline inputs, vLLM server requests, vLLM's own media loader) gets those frames and the study's
timestamps."""

import base64
import io
import json
import re
import subprocess

import cv2
import numpy as np
import pytest
from PIL import Image

from cuelab.config import FramesConfig
from cuelab.model.prompt import build_inputs
from cuelab.model.tiny import build_processor, qwen_tokenizer_from_files
from cuelab.video.first_study_frames import study_eval_frames
from cuelab.video.io import FrameSpec, Video, VideoError, read_video, sample_frames, write_video
from tests.conftest import fixture_path

QUESTION = {"id": "q1", "video": "v", "kind": "verb", "question": "_____ the cube.",
            "choices": ["Pushing", "Lifting", "Dropping", "Covering"], "answer": "Pushing", "answer_index": 0}
STUDY = FramesConfig(rule="first_study_vllm", max_frames=64, total_pixels=None)  # cuelab's frames_eval + the rule


def _clip(n: int, h: int = 128, w: int = 160) -> Video:
    """Every frame different (its index drawn in), so a wrong or repeated index shows in the pixels."""
    rng = np.random.default_rng(n)
    frames = rng.integers(0, 255, (n, h, w, 3), dtype=np.uint8)
    for i in range(n):
        cv2.putText(frames[i], str(i), (10, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 3)
    return Video(frames, 12.0, f"clip{n}.mp4")


@pytest.fixture(scope="module")
def processor():
    return build_processor(qwen_tokenizer_from_files(fixture_path("qwen-tokenizer")))


@pytest.mark.parametrize("n,count", [(30, 6), (64, 10), (100, 64)])
def test_study_rule_gives_the_study_frames_decoded_and_resized_no_padding_to_64(tmp_path, n, count):
    path = tmp_path / f"{n}.mp4"
    write_video(path, _clip(n, 240, 426).frames, 12.0)  # the study's clips: 12 fps, 426x240 (cropped even)
    s = sample_frames(path, STUDY.spec(), video_id=str(n))
    study = study_eval_frames(n, 12.0)
    assert s.indices == study.indices and s.n == count, "the study did not pad short clips to 64 frames"
    # the size the study's processor gave a 426x240 clip (its budget over t x h x w keeps it below 64 frames)
    assert (s.resized_width, s.resized_height) == (416, 256)
    decoded = read_video(path).frames
    want = np.stack([cv2.resize(decoded[i], (416, 256), interpolation=cv2.INTER_AREA) for i in study.indices])
    assert np.array_equal(s.frames, want)


def test_short_clip_keeps_one_temporal_patch_repeat_and_the_processor_adds_none(processor):
    s = sample_frames(_clip(30), STUDY.spec())
    assert s.indices == [0, 7, 14, 22, 29, 29]  # 5 frames at 2 fps, the last repeated once (temporal patch)
    out = build_inputs(processor, QUESTION, s)
    assert out["video_grid_thw"][0].tolist() == [6 // 2, 128 // 16, 160 // 16]  # not padded a second time
    video_id = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert out["input_ids"][0].tolist().count(video_id) == 3 * (128 // 32) * (160 // 32)


@pytest.mark.parametrize("n", [30, 64, 100])
def test_processor_grid_and_prompt_timestamps_are_the_studys(processor, n):
    s = sample_frames(_clip(n), STUDY.spec())
    study = study_eval_frames(n, 12.0)
    out = build_inputs(processor, QUESTION, s)
    assert out["video_grid_thw"][0, 0].item() == len(study.indices) // 2
    text = processor.tokenizer.decode(out["input_ids"][0])
    stamps = [float(x) for x in re.findall(r"<([0-9.]+) seconds>", text)]
    # what vLLM 0.11 wrote (6x too large on the clips it resampled), not the true times
    assert stamps == [round(t, 1) for t in study.prompt_seconds]
    assert stamps != [round(t, 1) for t in study.source_seconds]


def test_source_timestamps_on_request():
    spec = FrameSpec(**{**STUDY.spec().__dict__, "timestamps": "source"})
    s = sample_frames(_clip(30), spec)
    md = s.video_metadata()
    assert md.fps == 12.0 and list(md.frames_indices) == s.indices == study_eval_frames(30).indices
    with pytest.raises(ValueError, match="timestamps"):
        FrameSpec(timestamps="true")
    with pytest.raises(ValueError, match="rule"):
        FrameSpec(rule="vllm")


def test_one_frame_clip_is_a_data_error_naming_the_video():
    with pytest.raises(VideoError) as e:
        sample_frames(Video(np.zeros((1, 64, 64, 3), np.uint8), 12.0, "x/one.mp4"), STUDY.spec(), video_id="one")
    assert e.value.video_id == "one" and "first_study_vllm" in str(e.value)


def test_fps_rule_unchanged():
    s = sample_frames(_clip(30), FramesConfig(max_frames=64, min_frames=64, fps=64.0, total_pixels=None).spec())
    assert s.n == 64 and s.video_metadata().fps == 12.0  # cuelab's own rule: 64, frames shown twice, true times


def _payload_frames(url: str) -> np.ndarray:
    head, data = url.split(",", 1)
    assert head == "data:video/jpeg;base64"
    return np.stack([np.asarray(Image.open(io.BytesIO(base64.b64decode(p)))) for p in data.split(",")])


@pytest.mark.parametrize("n", [30, 100])
def test_vllm_offline_inputs_and_server_request_carry_the_same_frames(n):
    from cuelab.evaluate.vllm import VLLMBackend, _with_video_url, server_video

    s = sample_frames(_clip(n), STUDY.spec())
    study = study_eval_frames(n, 12.0)
    inp = VLLMBackend._offline_inputs(None, "prompt", s)
    frames, meta = inp["multi_modal_data"]["video"]
    assert frames.shape[0] == len(study.indices) and meta["do_sample_frames"] is False
    assert (meta["frames_indices"], meta["fps"]) == (study.stamp_indices, study.stamp_fps)
    url, kwargs = server_video(s, STUDY)
    assert np.array_equal(_payload_frames(url), s.frames)  # lossless: the very frames
    video = kwargs["media_io_kwargs"]["video"]
    assert video["num_frames"] == len(study.indices) and video["frames_indices"] == study.stamp_indices
    assert video["fps"] == study.stamp_fps and kwargs["mm_processor_kwargs"] == {"do_resize": False}
    msgs = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "file:///v.mp4"}},
                                         {"type": "text", "text": "q"}]}]
    assert _with_video_url(msgs, url)[0]["content"][0]["video_url"]["url"] == url
    # the fps rule still lets the server decode the file, asked for sample_frames' count
    fps_cfg = FramesConfig(max_frames=8)
    assert server_video(s, fps_cfg) == (None, {"media_io_kwargs": {"video": {"fps": 2.0, "min_frames": s.n,
                                                                             "max_frames": s.n}}})


VLLM_LOAD = """
import json, sys
import numpy as np
from vllm.multimodal.media import MediaConnector
url, kwargs = json.load(open(sys.argv[1]))
frames, meta = MediaConnector(media_io_kwargs=kwargs).fetch_video(url, video_processor="Qwen3VLVideoProcessor").media
np.save(sys.argv[2], np.asarray(frames))
json.dump(meta, open(sys.argv[3], "w"))
"""


@pytest.mark.vllm
def test_vllm_media_loader_reads_the_server_request_back(tmp_path):
    """vLLM's own loader (the one a server runs on a request's video) gives back the frames and metadata."""
    from cuelab.evaluate.run import vllm_python
    from cuelab.evaluate.vllm import server_video

    py = vllm_python()
    if py is None:
        pytest.skip("no vLLM venv (.venv-vllm or CUELAB_VLLM_PYTHON): run scripts/setup_vllm.sh")
    s = sample_frames(_clip(100), STUDY.spec())
    url, kwargs = server_video(s, STUDY)
    (tmp_path / "req.json").write_text(json.dumps([url, kwargs["media_io_kwargs"]]))
    (tmp_path / "load.py").write_text(VLLM_LOAD)
    subprocess.run([str(py), str(tmp_path / "load.py"), str(tmp_path / "req.json"), str(tmp_path / "f.npy"),
                    str(tmp_path / "m.json")], check=True, timeout=300)
    meta = json.loads((tmp_path / "m.json").read_text())
    assert np.array_equal(np.load(tmp_path / "f.npy"), s.frames)
    assert meta["frames_indices"] == s.metadata_fields()["frames_indices"] and meta["do_sample_frames"] is False
    assert meta["fps"] == s.metadata_fields()["fps"]
