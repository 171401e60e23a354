"""Peak GPU memory and time of the attention pass (cuelab.attention) on Qwen3-VL-2B's architecture, random weights.

    python benchmarks/attention_memory.py --questions 10 --frames 64          # on a GPU
    python benchmarks/attention_memory.py --preset tiny --questions 2 --frames 8 --no-record   # CPU smoke run

Synthetic 427x240 videos long enough for `--frames` sampled frames, a plain and a box-cued copy, one object
question each; every question goes through the stage's own path (THE frame sampler, THE prompt builder, the
last-row recorder, the measures). Baseline in the same run: one plain eager forward with output_attentions=True
(every layer's L x L map kept), the way attention maps are usually taken.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.results import append_results, markdown_table  # noqa: E402
from cuelab.attention.collect import attention_to_video  # noqa: E402
from cuelab.attention.run import measure_question  # noqa: E402
from cuelab.config import ExperimentConfig, SyntheticConfig  # noqa: E402
from cuelab.data.something_else import load_annotations  # noqa: E402
from cuelab.data.synthetic import generate  # noqa: E402
from cuelab.model.prompt import build_inputs  # noqa: E402
from cuelab.model.tiny import build_tiny, preset_config, small_test_config  # noqa: E402
from cuelab.video.io import find_video, read_video, write_video  # noqa: E402


def make_data(root: Path, n: int, seconds: float, workers: int) -> list[dict]:
    generate(SyntheticConfig(videos=n, seed=0, width=427, height=240, min_seconds=seconds, max_seconds=seconds),
             root / "data", workers=workers)
    tracks = load_annotations(root / "data" / "annotations.json").videos
    questions = []
    for vid, tr in sorted(tracks.items()):
        v = read_video(find_video(root / "data" / "videos", vid))
        write_video(root / "videos" / "plain" / f"{vid}.mp4", v.frames, v.fps)
        boxed = v.frames.copy()
        for t, (x1, y1, x2, y2) in tr.tracks["0"].items():
            if t < len(boxed):
                cv2.rectangle(boxed[t], (int(x1), int(y1)), (int(x2), int(y2)), (255, 0, 0), 3)
        write_video(root / "videos" / "box" / f"{vid}.mp4", boxed, v.fps)
        questions.append({"id": f"{vid}-object", "video": vid, "kind": "object", "question": "What is moved?",
                          "choices": ["the red cube", "the blue ball", "the green ring", "the pink star"],
                          "answer": "the red cube", "answer_index": 0, "target_object": "0", "split": "test"})
    return questions


def make_model(preset: str, device: str):
    model, processor = build_tiny(small_test_config())
    if preset == "tiny":
        return model.to(device), processor
    config = preset_config(preset)
    tok = processor.tokenizer  # the small local tokenizer; its special-token ids replace Qwen's in the config
    for key, token in (("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
                       ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")):
        setattr(config, key, tok.convert_tokens_to_ids(token))
    config._attn_implementation = "eager"  # what the stage loads (the text decoder's is swapped during the pass)
    torch.manual_seed(0)
    with torch.device(device):
        model = type(model)(config).to(torch.bfloat16).eval()
    return model, processor


def gib(x: int) -> float:
    return round(x / 2**30, 2)


def timed(fn, repeats: int = 5) -> tuple[str, float]:
    """(median ms after one warm-up, peak GiB) of fn() on the GPU."""
    with torch.inference_mode():
        fn()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(repeats):
            t = time.time()
            out = fn()
            torch.cuda.synchronize()
            times.append(time.time() - t)
            del out
    return f"{np.median(times) * 1000:.0f}", gib(torch.cuda.max_memory_allocated())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="qwen3-vl-2b")
    ap.add_argument("--questions", type=int, default=10)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = device == "cuda"
    cfg = ExperimentConfig.model_validate({"frames_eval": {"fps": 6.0, "max_frames": args.frames, "min_frames": 4,
                                                           "total_pixels": None}})
    seconds = args.frames / 6.0 + 1.0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.time()
        questions = make_data(root, args.questions, seconds, args.workers)
        tracks = load_annotations(root / "data" / "annotations.json").videos
        data_s = time.time() - t0
        model, processor = make_model(args.preset, device)
        weights = torch.cuda.memory_allocated() if cuda else 0
        rows_out, times = [], []
        for cond in ("plain", "box"):
            for i, q in enumerate(questions):
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                    torch.cuda.synchronize()
                t = time.time()
                rec, rows, frames, _ = measure_question(model, processor, q, cond, tracks[q["video"]],
                                                        root / "videos", cfg, None, per_head=False)
                if cuda:
                    torch.cuda.synchronize()
                dt = time.time() - t
                peak = torch.cuda.max_memory_allocated() if cuda else 0
                times.append((dt, peak))
                if i == 0:
                    print(f"{cond}: {frames.n} frames {frames.resized_width}x{frames.resized_height}, grid "
                          f"{rec['grid']}, layers {rec['layers']}, lift {rec['lift'][:3]}...", flush=True)
        n_tokens = int(build_inputs(processor, questions[0], frames)["input_ids"].shape[1])
        warm = times[1:]  # the first question pays for kernel selection
        rows_out.append(["cuelab last-row recorder (per question, incl. sampling + prompt + measures)",
                         len(times), n_tokens, f"{np.median([t for t, _ in warm]) * 1000:.0f}",
                         gib(max(p for _, p in times)), gib(weights)])
        # the forward pass alone, then the baseline on the same inputs: an eager forward keeping every layer's
        # L x L attention (output_attentions=True)
        base = "not run (CPU)"
        if cuda:
            inputs = {k: v.to(device) for k, v in build_inputs(processor, questions[0], frames).items()
                      if isinstance(v, torch.Tensor)}
            video_token = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
            ms, peak = timed(lambda: attention_to_video(model, inputs, video_token))
            rows_out.append(["cuelab last-row recorder, forward only", 5, n_tokens, ms, peak, gib(weights)])
            model.set_attn_implementation("eager")
            try:
                ms, peak = timed(lambda: model(**inputs, use_cache=False, output_attentions=True, logits_to_keep=1))
                base = "ran"
            except torch.OutOfMemoryError:
                ms, peak, base = "OOM", "OOM", "OOM"
            rows_out.append(["baseline: eager, output_attentions=True (all L x L maps kept)", 5, n_tokens, ms,
                             peak, gib(weights)])
    table = markdown_table(["path", "forward passes", "prompt tokens", "median ms", "peak GiB", "weights GiB"],
                           rows_out)
    notes = (f"{args.preset} architecture, random weights, {next(model.parameters()).dtype}, "
             f"{args.questions} questions x (plain, box), "
             f"{frames.n} frames of 427x240 sampled to {frames.resized_width}x{frames.resized_height}; test data "
             f"made in {data_s:.0f} s (not in the timings). Baseline {base}. Peak = torch.cuda.max_memory_allocated "
             f"during one question.")
    print(table + "\n\n" + notes)
    print(json.dumps({"times_s": [round(t, 3) for t, _ in times], "peaks_gib": [gib(p) for _, p in times]}))
    if not args.no_record:
        append_results(f"Attention pass: {args.preset} at {frames.n} frames", table, notes)


if __name__ == "__main__":
    main()
