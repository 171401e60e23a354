"""GPU benchmark across model families: for every family in cuelab.model.families.FAMILIES, the smallest real
architecture size (random weights, no download) at the study's evaluation settings (SSv2-like 427x240 clips as
cuelab samples them for that family), questions/s of cuelab's choice scoring vs the family's own `generate` in
the same process on the same inputs, and peak GPU memory.

No tokenizer files exist on GPU machines: each family's processor is its real processor class at the real
checkpoint's frame geometry around a tokenizer built here (the family's tiny tokenizer, whose special tokens sit
at small ids); the model's config is then pointed at those ids (video / image token ids). The Qwen families use
a tokenizer padded so Qwen's special tokens keep their real ids (cuelab.model.tiny.qwen_id_processor).

Rows per family:
- generate: transformers `generate` of 16 new tokens per question (eos disabled), one question at a time; first on
  the model as transformers ships it (stock: the baseline of the speed-up), then with cuelab's family speed-ups
  applied (maths-preserving patches that help generate too: a stricter second ratio).
- cuelab (model only): HFScorer.score_many, 4 videos a call as `cuelab eval` runs on a GPU, inputs prepared
  before the clock starts; cuelab (end to end): the processor in prefetching threads, frames arrays in.
- check: on one video, cuelab's scores vs one full forward per choice (reference_scores): same answer in bf16;
  in --smoke (float32, CPU) max |diff| <= 1e-4.

    python benchmarks/families_gpu.py --out DIR              (DIR/families_gpu.json, DIR/section.md)
    python benchmarks/families_gpu.py --smoke --out DIR --no-append     (CPU: a small model, same processors)
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.eval_gpu import sync, timed, video_questions  # noqa: E402
from benchmarks.results import append_results, markdown_table  # noqa: E402
from cuelab.evaluate.hf import HFScorer, VisionCache, reference_scores  # noqa: E402
from cuelab.evaluate.run import _chunks, prefetch  # noqa: E402
from cuelab.model.families import FAMILIES  # noqa: E402
from cuelab.model.prompt import build_inputs  # noqa: E402
from cuelab.model.speed import compile_family_pieces  # noqa: E402

SRC_W, SRC_H = 427, 240  # SSv2-like clips
QWEN_FRAME_CAP = 256 * 416  # the study's per-frame pixel cap (Qwen families: frames sized by smart_resize)
SMOKE_FRAME_CAP = 64 * 64
NEW_TOKENS = 16


@dataclass(frozen=True)
class Setup:
    """One family's benchmark settings: its smallest real preset and frames a video (fixed-size families: what
    keeps the run affordable; the size is the processor's)."""

    preset: str
    frames: int
    preset_module: str  # the module whose preset_config(preset) gives the real config


SETUPS = {
    "qwen3_vl": Setup("qwen3-vl-2b", 64, "cuelab.model.tiny"),
    "qwen2_5_vl": Setup("qwen2.5-vl-3b", 64, "cuelab.model.families.qwen2_5_vl"),
    "llava_onevision": Setup("llava-onevision-0.5b", 64, "cuelab.model.families.llava_onevision"),
    "internvl": Setup("internvl3-1b", 32, "cuelab.model.families.internvl"),  # 32 x 256 = 8,192 video tokens
    "smolvlm": Setup("smolvlm2-500m", 64, "cuelab.model.families.smolvlm"),
}

# config attributes naming the tokens the model finds in input_ids, and the token each is
TOKEN_ATTRS = {
    "qwen3_vl": {"image_token_id": "<|image_pad|>", "video_token_id": "<|video_pad|>",
                 "vision_start_token_id": "<|vision_start|>", "vision_end_token_id": "<|vision_end|>"},
    "llava_onevision": {"image_token_id": "<image>", "video_token_id": "<video>"},
    "internvl": {"image_token_id": "<IMG_CONTEXT>"},
    "smolvlm": {"image_token_id": "<image>"},
}
TOKEN_ATTRS["qwen2_5_vl"] = TOKEN_ATTRS["qwen3_vl"]


class Frames:
    """Sampled frames as cuelab.video.io.SampledFrames gives them (already resized; explicit metadata), without
    importing the video module (PyAV may be missing on GPU machines)."""

    def __init__(self, frames: np.ndarray, video_id: str, fps: float = 2.0):
        self.frames, self.video_id, self.fps = frames, video_id, fps
        self.resized_height, self.resized_width = int(frames.shape[1]), int(frames.shape[2])

    def video_metadata(self):
        from transformers.video_utils import VideoMetadata

        n = self.frames.shape[0]
        return VideoMetadata(total_num_frames=n, fps=self.fps, width=SRC_W, height=SRC_H, duration=n / self.fps,
                             frames_indices=list(range(n)))


def make_videos(n: int, frames: int, h: int, w: int, seed: int = 0) -> list[tuple[Frames, list[dict]]]:
    """`n` videos of random frames, 2 and 3 questions alternately, 4 choices each."""
    rng = np.random.default_rng(seed)
    out = []
    for v in range(n):
        fr = Frames(rng.integers(0, 256, (frames, h, w, 3), dtype=np.uint8), f"v{v}")
        qs = video_questions(rng, v)
        out.append((fr, qs))
    return out


def reset_peak():
    if torch.cuda.is_available():
        sync()
        torch.cuda.reset_peak_memory_stats()


def peak_gib():
    return round(torch.cuda.max_memory_allocated() / 2 ** 30, 1) if torch.cuda.is_available() else None


# --- models and processors ----------------------------------------------------------------------------------------
def real_config(name: str):
    setup = SETUPS[name]
    return importlib.import_module(setup.preset_module).preset_config(setup.preset)


def build_processor(name: str, config):
    """The family's real processor class at the real checkpoint's frame geometry (read from `config`), around a
    tokenizer built here."""
    from cuelab.model.tiny import qwen_id_processor, small_test_config

    if name == "qwen3_vl":
        return qwen_id_processor()  # patch 16, merge 2, temporal 2: the real Qwen3-VL processor settings
    if name == "qwen2_5_vl":
        from cuelab.model.families import qwen2_5_vl

        tok = qwen_id_processor().tokenizer  # Qwen's special tokens at their real ids, as Qwen2.5-VL's
        tok.chat_template = qwen2_5_vl.CHAT_TEMPLATE
        return qwen2_5_vl.build_processor(tok)  # patch 14, merge 2, temporal 2
    tok = FAMILIES[name].build_tiny(small_test_config())[1].tokenizer
    module = importlib.import_module(f"cuelab.model.families.{name}")
    vc = config.vision_config
    if name == "llava_onevision":
        return module.build_processor(tok, int(vc.image_size))  # 384 px, patch 14: 729 patches a frame
    if name == "internvl":
        side = vc.image_size[0] if isinstance(vc.image_size, (list, tuple)) else vc.image_size  # (h, w) there
        return module.build_processor(tok, int(side))  # 448 px, patch 14, pixel shuffle: 256 a frame
    if name == "smolvlm":
        per_side = int(vc.image_size) // int(vc.patch_size) // int(config.scale_factor)
        return module.build_processor(tok, int(vc.image_size), per_side ** 2)  # 500M: 512 px, 64 a frame
    raise ValueError(f"no processor recipe for family {name!r}")


def fit_token_ids(name: str, model, processor) -> dict:
    """Point the model (config and modules that copied the ids at init) at the processor's special-token ids;
    generation: no eos (always NEW_TOKENS new tokens), the tokenizer's pad."""
    tok = processor.tokenizer
    ids = {attr: int(tok.convert_tokens_to_ids(t)) for attr, t in TOKEN_ATTRS[name].items()}
    for attr, i in ids.items():
        setattr(model.config, attr, i)
        for m in model.modules():
            if isinstance(getattr(m, attr, None), int):
                setattr(m, attr, i)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = tok.pad_token_id
    return ids


def shrink(config) -> None:
    """A small model of the same family and structure (smoke): narrow vision tower, 2 narrow text layers; frame
    geometry (image size, patch, merge, scale) kept, so the real-size processors fit it."""
    tc, vc = config.text_config, config.vision_config
    for k, v in dict(hidden_size=256, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                     num_key_value_heads=1).items():
        setattr(tc, k, v)
    if getattr(tc, "head_dim", None) is not None:
        tc.head_dim = 128
    for k, v in dict(hidden_size=64, intermediate_size=128, num_heads=2, num_attention_heads=2).items():
        if hasattr(vc, k):
            setattr(vc, k, v)
    if hasattr(vc, "out_hidden_size"):
        vc.out_hidden_size = tc.hidden_size


def build_model(name: str, smoke: bool, device):
    if not smoke:
        return FAMILIES[name].random_model(SETUPS[name].preset, dtype=torch.bfloat16, device=device).eval()
    from transformers import AutoModelForImageTextToText

    config = real_config(name)
    shrink(config)
    torch.manual_seed(0)
    return AutoModelForImageTextToText.from_config(config, attn_implementation="sdpa").float().eval()


def frame_size(name: str, processor, smoke: bool) -> tuple[int, int]:
    """(height, width) of every frame as cuelab samples a 427x240 clip for this family."""
    g = FAMILIES[name].geometry(processor)
    if g.size is not None:
        return g.size[1], g.size[0]
    try:
        from cuelab.video.io import smart_resize
    except ImportError:  # no PyAV: transformers' copy of the same Qwen-VL rule
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize
    cap = SMOKE_FRAME_CAP if smoke else QWEN_FRAME_CAP
    return smart_resize(SRC_H, SRC_W, factor=g.factor, min_pixels=32 * 32, max_pixels=cap)


# --- rows ---------------------------------------------------------------------------------------------------------
def time_generate(model, processor, videos, n: int, dev) -> dict:
    """ms per question of `generate` (NEW_TOKENS new tokens, greedy), one question at a time, after a warm-up."""
    inputs = []
    for fr, qs in videos:
        for q in qs:
            if len(inputs) < n + 1:
                inp = build_inputs(processor, q, fr)
                inputs.append({k: v.to(dev) for k, v in inp.items()})
    reset_peak()
    times = []
    with torch.no_grad():
        model.generate(**inputs[0], max_new_tokens=NEW_TOKENS, do_sample=False)  # warm-up
        for inp in inputs[1:]:
            out, dt = timed(model.generate, **inp, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                            do_sample=False)
            assert out.shape[1] - inp["input_ids"].shape[1] == NEW_TOKENS
            times.append(dt)
    return {"ms_per_question": round(1000 * float(np.median(times)), 1), "questions": len(times),
            "peak_gib": peak_gib()}


def time_scorer(scorer, prepared, videos, per_call: int, workers: int) -> dict:
    """Questions/s of cuelab's scorer: model only (inputs prepared) and end to end (processor in threads)."""
    n_q = sum(len(qs) for _, qs in videos)
    for c in list(_chunks(prepared, per_call))[:2]:  # warm-up at this batch size (compile: static, then dynamic)
        scorer.score_many(c)
    reset_peak()
    _, secs = timed(lambda: [scorer.score_many(c) for c in _chunks(prepared, per_call)])
    res = {"model_q_per_s": round(n_q / secs, 2), "ms_per_video": round(1000 * secs / len(prepared), 1),
           "peak_gib": peak_gib()}

    def prep(item):
        fr, qs = item
        return scorer.prepare(qs, fr)

    _, e2e = timed(lambda: [scorer.score_many(c) for c in _chunks(prefetch(prep, videos, workers), per_call)])
    res["e2e_q_per_s"] = round(n_q / e2e, 2)
    return res


def check(scorer, model, processor, video, smoke: bool) -> dict:
    """cuelab's scores vs one full forward per choice on one video."""
    fr, qs = video
    with torch.no_grad():
        ref = [reference_scores(model, processor, q, fr) for q in qs]
    fast = scorer.score(scorer.prepare(qs, fr))
    d = [abs(a - b) for f, r in zip(fast, ref) for a, b in zip(f.scores, r.scores)]
    same = sum(f.choice() == r.choice() for f, r in zip(fast, ref))
    out = {"max_abs_diff": float(f"{max(d):.2e}"), "same_answer": f"{same}/{len(qs)}"}
    if smoke:
        out["ok"] = max(d) <= 1e-4
    return out


def run_family(name: str, args, dev) -> dict:
    """Every row of one family; the model is let go when this returns."""
    setup = SETUPS[name]
    n_frames = 4 if args.smoke else setup.frames
    t0 = time.perf_counter()
    model = build_model(name, args.smoke, dev)
    processor = build_processor(name, real_config(name))
    token_ids = fit_token_ids(name, model, processor)
    h, w = frame_size(name, processor, args.smoke)
    videos = make_videos(args.videos, n_frames, h, w)
    stock = time_generate(model, processor, videos, args.baseline_questions, dev)  # transformers as shipped
    FAMILIES[name].speedups(model, compile=args.compile)  # what `cuelab eval` applies (compile: qwen3_vl only)
    if args.compile and name != "qwen3_vl":  # the generic compile, measured before eval turns it on
        compile_family_pieces(model, FAMILIES[name])
    res = {"family": name, "preset": setup.preset, "frames": n_frames, "frame_hw": [h, w],
           "token_ids": token_ids, "setup_s": round(time.perf_counter() - t0, 1),
           "questions": sum(len(qs) for _, qs in videos), "videos": len(videos)}
    scorer = HFScorer(model, processor, vision_cache=VisionCache(size=0))
    prepared = [scorer.prepare(qs, fr) for fr, qs in videos]
    ids = prepared[0]["items"][0]["input_ids"]
    res["prompt_tokens"] = int(ids.shape[0])
    res["video_tokens"] = int((ids == FAMILIES[name].video_token_id(model)).sum())
    res["generate_stock"] = stock
    res["generate"] = time_generate(model, processor, videos, args.baseline_questions, dev)  # with speed-ups
    res["cuelab"] = time_scorer(scorer, prepared, videos, args.per_call, args.workers)
    res["check"] = check(scorer, model, processor, videos[0], args.smoke)
    for key, base in (("", res["generate_stock"]), ("_patched", res["generate"])):
        base_qps = 1000 / base["ms_per_question"]
        res[f"x_generate{key}_model"] = round(res["cuelab"]["model_q_per_s"] / base_qps, 1)
        res[f"x_generate{key}_e2e"] = round(res["cuelab"]["e2e_q_per_s"] / base_qps, 1)
    return res


def run_safely(name: str, args, dev) -> dict:
    """run_family, its failure recorded (not raised) so the other families still run; GPU memory freed."""
    t = time.perf_counter()
    try:
        res = run_family(name, args, dev)
    except Exception as e:  # noqa: BLE001  (any failure of one family is reported, the run goes on)
        traceback.print_exc()
        res = {"family": name, "preset": SETUPS[name].preset, "error": f"{type(e).__name__}: {e}"[:300]}
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    res["wall_s"] = round(time.perf_counter() - t, 1)
    print(json.dumps(res), flush=True)
    return res


# --- report -------------------------------------------------------------------------------------------------------
HEADER = ["family", "architecture", "frames (h x w)", "video / prompt tokens",
          "generate q/s (stock / cuelab's speed-ups)",
          "cuelab model-only q/s", "x generate (stock / speed-ups)", "cuelab end-to-end q/s",
          "x generate e2e (stock / speed-ups)", "peak GiB generate / cuelab", "check vs reference"]


def table_row(r: dict) -> list:
    if "error" in r:
        return [r["family"], r["preset"], "failed: " + r["error"].replace("|", "/")] + [""] * (len(HEADER) - 3)
    g, s, c, k = r["generate"], r["generate_stock"], r["cuelab"], r["check"]
    chk = f"same answer {k['same_answer']}, max diff {k['max_abs_diff']}" + (
        f" ({'ok' if k['ok'] else 'FAIL'} <= 1e-4)" if "ok" in k else "")
    return [r["family"], r["preset"], f"{r['frames']} ({r['frame_hw'][0]} x {r['frame_hw'][1]})",
            f"{r['video_tokens']} / {r['prompt_tokens']}",
            f"{round(1000 / s['ms_per_question'], 2)} / {round(1000 / g['ms_per_question'], 2)}",
            c["model_q_per_s"], f"{r['x_generate_model']} / {r['x_generate_patched_model']}",
            c["e2e_q_per_s"],
            f"{r['x_generate_e2e']} / {r['x_generate_patched_e2e']}",
            f"{g['peak_gib']} / {c['peak_gib']}", chk]


def write_report(results: list[dict], meta: dict, args) -> None:
    table = markdown_table(HEADER, [table_row(r) for r in results])
    ok = [r for r in results if "error" not in r]
    worst = min((r["x_generate_model"] for r in ok), default=None)
    dtype = "float32 on the CPU (smoke: a small model of each family; timings mean nothing)" if args.smoke else "bf16"
    compiled = ("--compile: torch.compile of the LLM MLPs/norms and vision blocks, in the speed-ups baseline too"
                if args.compile else "no compile")
    notes = (f"Random weights, {dtype}, SDPA, transformers {meta['transformers']}, torch {meta['torch']}, card "
             f"{meta['card']}. Per family {args.videos} videos x 2.5 questions x 4 choices of SSv2-like 427x240 "
             f"clips as cuelab samples them for the family (Qwen families: per-frame cap 256x416, smart_resize "
             f"at the family's factor; fixed-size families: their frame size; InternVL at 32 frames to keep the "
             f"run affordable: 32 x 256 tokens). generate: {NEW_TOKENS} new tokens per question (eos off), "
             f"median over {args.baseline_questions} questions, one at a time, first on the model as transformers "
             f"ships it (stock), then with cuelab's family speed-ups applied (a stricter baseline). cuelab: HFScorer.score_many, "
             f"{args.per_call} videos a call, family speed-ups as `cuelab eval` applies them ({compiled}); model "
             f"only = inputs prepared before the clock; end to end = processor in {args.workers} threads. "
             f"Processors: the real processor classes at the checkpoints' frame geometry around a tokenizer built "
             f"here (no tokenizer files); the model config's special-token ids point at its ids. Check: one video, "
             f"cuelab vs one full forward per choice. Slowest speed-up over stock generate (model only): {worst}x.")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "families_gpu.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    cmd = "python benchmarks/families_gpu.py " + " ".join(sys.argv[1:])
    head = f"- date: {meta['date']}\n- machine: {meta['card']}\n- command: `{cmd}`\n"
    (args.out / "section.md").write_text(f"{head}\n{table}\n\n{notes}\n")
    print(table + "\n\n" + notes)
    if not args.no_append and not args.smoke:
        append_results("families_gpu: cuelab scoring vs generate, every model family at a real size", table,
                       notes)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--families", default=",".join(FAMILIES), help="comma-separated subset of " + ",".join(FAMILIES))
    ap.add_argument("--videos", type=int, default=12)
    ap.add_argument("--baseline-questions", type=int, default=8)
    ap.add_argument("--per-call", type=int, default=4, help="videos a scoring call (eval.videos_per_call)")
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--out", type=Path, default=Path("."))
    ap.add_argument("--compile", action="store_true", help="torch.compile the fusable pieces (qwen3_vl: as "
                    "eval.compile does; the others: cuelab.model.speed.compile_family_pieces), in the speed-ups "
                    "baseline too")
    ap.add_argument("--no-append", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="a small model of each family on the CPU, float32, 4 "
                    "frames, with the same real-size processors: checks the script and the scores (max |diff| "
                    "<= 1e-4) before GPU time is spent; its timings mean nothing")
    args = ap.parse_args()
    names = [n.strip() for n in args.families.split(",") if n.strip()]
    unknown = [n for n in names if n not in SETUPS]
    if unknown:
        ap.error(f"unknown families {unknown}; known: {', '.join(SETUPS)}")
    if args.smoke:
        args.videos, args.baseline_questions, args.per_call = min(args.videos, 3), min(args.baseline_questions, 2), 2
        args.compile = False
    dev = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    import datetime
    import transformers

    meta = {"card": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu", "torch": torch.__version__,
            "transformers": transformers.__version__,
            "date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}", "smoke": args.smoke}
    results = [run_safely(n, args, dev) for n in names]
    write_report(results, meta, args)
    if args.smoke and any("error" in r or not r["check"]["ok"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
