"""GPU evaluation benchmark: the Qwen3-VL-2B architecture (random weights, no download) at the first study's
evaluation settings: 64 frames of 427x240 (sampled to 416x256: 3,328 video tokens, ~3,660 tokens a prompt),
2.5 questions a video (2 and 3 alternately), 4 choices each.

Rows, measured in the same process on the same inputs:
- baseline: transformers `generate` of 16 tokens per question (what the first study did, one request at a time).
- reference: one full forward per choice (prompt + choice + <|im_end|>), plain transformers.
- cuelab: `HFScorer` as `cuelab eval` runs it on a GPU: batched vision attention, the video prefix once per
  video with its KV cache shared by every question and choice (one batched forward), LM head on choice
  positions only. "model" = inputs already processed; "end to end" = from frames arrays through the prompt
  builder / processor in prefetching threads (video decoding not included).
Checks: cuelab scores vs the reference path in bf16 and in float32 (TF32 off), same questions.
FLOP floor: vision tower + LLM prefix per video at 700 TFLOP/s (dense bf16 matmuls on an H100).

    python benchmarks/eval_gpu.py --out DIR        (writes DIR/eval_gpu.json and DIR/section.md)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results import append_results, markdown_table  # noqa: E402
from cuelab.evaluate.hf import HFScorer, VisionCache, reference_scores  # noqa: E402
from cuelab.evaluate.run import _chunks, prefetch  # noqa: E402
from cuelab.model.prompt import build_inputs  # noqa: E402
from cuelab.model.speed import batch_vision_attention  # noqa: E402
from cuelab.model.tiny import qwen_id_processor, random_model  # noqa: E402

H, W, FRAMES = 256, 416, 64  # what sample_frames gives for 427x240 at 64 frames (256*416 per-frame cap)
VERBS = ["Pushing something from left to right", "Lifting something up completely", "Dropping something into "
         "something", "Covering something with something", "Pulling something from right to left",
         "Moving something closer to something", "Turning something upside down", "Rolling something"]
OBJECTS = ["red cube", "blue ball", "green cone", "yellow star", "purple ring", "white cylinder", "black box",
           "orange disk"]
PEAK_TFLOPS = 700.0


class Frames:
    """Sampled frames as cuelab.video.io.SampledFrames gives them (already resized; explicit metadata), without
    importing the video module (PyAV may be missing on GPU machines)."""

    def __init__(self, frames: np.ndarray, fps: float = 2.0):
        self.frames, self.fps = frames, fps

    def video_metadata(self):
        from transformers.video_utils import VideoMetadata

        n = self.frames.shape[0]
        return VideoMetadata(total_num_frames=n, fps=self.fps, width=427, height=240, duration=n / self.fps,
                             frames_indices=list(range(n)))


def video_questions(rng, v: int) -> list[dict]:
    """The questions of video `v`: 2 and 3 alternately (verb, object, verb), 4 choices each, drawn from `rng`."""
    qs = []
    for k in range(2 + v % 2):
        pool = VERBS if k % 2 == 0 else OBJECTS
        choices = [str(c) for c in rng.choice(pool, 4, replace=False)]
        qs.append({"id": f"v{v}-q{k}", "video": f"v{v}", "kind": "verb" if k % 2 == 0 else "object",
                   "question": "Which phrase describes what happens to the object marked in red in the video?"
                   if k % 2 == 0 else "What is the object in the red box in this clip?",
                   "choices": choices, "answer": choices[0], "answer_index": 0})
    return qs


def make_videos(n: int, seed: int = 0) -> list[tuple[Frames, list[dict]]]:
    rng = np.random.default_rng(seed)
    out = []
    for v in range(n):
        frames = Frames(rng.integers(0, 256, (FRAMES, H, W, 3), dtype=np.uint8))
        out.append((frames, video_questions(rng, v)))
    return out


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, *a, **k):
    sync()
    t = time.perf_counter()
    r = fn(*a, **k)
    sync()
    return r, time.perf_counter() - t


def flop_floor_ms(model, n_patches: int, n_tokens: int) -> tuple[float, float]:
    """(vision ms, LLM prefix ms) at PEAK_TFLOPS: 2 x params x tokens for the matmuls + causal attention."""
    inner = model.model
    vis = sum(p.numel() for p in inner.visual.parameters())
    llm = sum(p.numel() for n, p in inner.language_model.named_parameters() if "embed_tokens" not in n)
    vc, tc = model.config.vision_config, model.config.text_config
    seg = n_patches // (FRAMES // 2)  # attention within each frame pair
    vis_flops = 2 * vis * n_patches + 4 * n_patches * seg * vc.hidden_size * vc.depth
    llm_flops = 2 * llm * n_tokens + 2 * n_tokens ** 2 * tc.num_attention_heads * tc.head_dim * tc.num_hidden_layers
    return vis_flops / PEAK_TFLOPS / 1e9, llm_flops / PEAK_TFLOPS / 1e9


def chunks(xs, n):
    return [xs[i:i + n] for i in range(0, len(xs), n)]


def time_scorer(scorer, prepared, per_call: int) -> tuple[float, dict]:
    """Seconds to score every prepared video, `per_call` videos a call, and GPU ms a video per stage."""
    scorer.events = []
    _, secs = timed(lambda: [scorer.score_many(c) for c in chunks(prepared, per_call)])
    stages = {"vision": 0.0, "prefix": 0.0, "choices": 0.0}
    for (s0, e0), (s1, e1) in zip(scorer.events, scorer.events[1:]):
        if s1 != "start":
            stages[s1] += e0.elapsed_time(e1)
    scorer.events = None
    return secs, {k: round(v / len(prepared), 1) for k, v in stages.items()}


def profile(scorer, prepared, out: Path, per_call: int = 1, name: str = "profile.txt") -> None:
    """torch.profiler over the scorer: GPU busy time vs wall time, the top CUDA kernels and host ops."""
    from torch.profiler import ProfilerActivity, profile as tprofile

    out.mkdir(parents=True, exist_ok=True)
    sync()
    with tprofile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t = time.perf_counter()
        for c in chunks(prepared, per_call):
            scorer.score_many(c)
        sync()
        wall = time.perf_counter() - t
    ka = prof.key_averages()
    gpu_us = sum(e.self_device_time_total for e in ka if e.device_type == torch.autograd.DeviceType.CUDA)
    launches = sum(e.count for e in ka if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))
    head = (f"{len(prepared)} videos: wall {1000 * wall / len(prepared):.1f} ms a video (profiler on), GPU kernels "
            f"{gpu_us / 1000 / len(prepared):.1f} ms a video, {launches / len(prepared):.0f} kernel launches a video\n")
    text = (head + ka.table(sort_by="self_cuda_time_total", row_limit=30) + "\n\n"
            + ka.table(sort_by="self_cpu_time_total", row_limit=30))
    (out / name).write_text(text)
    print(head)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=40)
    ap.add_argument("--baseline-questions", type=int, default=10)
    ap.add_argument("--check-videos", type=int, default=2)
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--out", type=Path, default=Path("."))
    ap.add_argument("--no-append", action="store_true")
    ap.add_argument("--profile-videos", type=int, default=0, help="torch.profiler over this many videos "
                    "(cuelab path): the top kernels and host ops go to DIR/profile.txt")
    ap.add_argument("--smoke", action="store_true", help="a small model and 8 small frames on the CPU: checks that "
                    "this script runs before GPU time is spent on it (its numbers mean nothing)")
    ap.add_argument("--per-call", default="1,4,8", help="videos a scoring call (eval.videos_per_call) to time")
    ap.add_argument("--compile", action="store_true", help="also time the scorer with every decoder layer and "
                    "vision block compiled (torch.compile, dynamic shapes)")
    args = ap.parse_args()
    global H, W, FRAMES
    preset = "qwen3-vl-2b"
    if args.smoke:
        from cuelab.model.tiny import PRESETS

        PRESETS["smoke"] = dict(text=dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2), out_hidden_size=256)
        preset, H, W, FRAMES = "smoke", 64, 64, 8
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    t0 = time.perf_counter()
    processor = qwen_id_processor()
    videos = make_videos(args.videos)
    model = random_model(preset, dtype=torch.bfloat16, device=dev).eval()
    model.generation_config.eos_token_id = None  # random weights: always 16 new tokens
    setup_s = time.perf_counter() - t0
    n_q = sum(len(qs) for _, qs in videos)
    res = {"card": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu", "torch": torch.__version__, "videos": args.videos,
           "questions": n_q, "setup_s": round(setup_s, 1)}
    import transformers

    res["transformers"] = transformers.__version__

    # --- inputs (CPU, processor) once, outside every timed row ---------------------------------------------------
    plain_scorer = HFScorer(model, processor)
    (prepared, prep_s) = timed(lambda: [plain_scorer.prepare(qs, fr) for fr, qs in videos])
    res["prepare_ms_per_video_1thread"] = round(1000 * prep_s / len(videos), 1)
    res["prompt_tokens"] = int(prepared[0]["items"][0]["input_ids"].shape[0])
    grid = prepared[0]["pixels"]["video_grid_thw"][0].tolist()
    res["video_tokens"] = int(np.prod(grid) // 4)

    # --- baseline: generate 16 tokens per question ----------------------------------------------------------------
    with torch.no_grad():
        base_inputs = []
        for fr, qs in videos:
            for q in qs:
                if len(base_inputs) < args.baseline_questions + 1:
                    base_inputs.append({k: v.to(dev) for k, v in build_inputs(processor, q, fr).items()})
        model.generate(**base_inputs[0], max_new_tokens=16, do_sample=False)  # warm-up
        times = []
        for inp in base_inputs[1:]:
            out, dt = timed(model.generate, **inp, max_new_tokens=16, min_new_tokens=16, do_sample=False)
            assert out.shape[1] - inp["input_ids"].shape[1] == 16
            times.append(dt)
        res["baseline_ms_per_question"] = round(1000 * float(np.median(times)), 1)
        # one prefill of a prompt (vision + LLM), as the issue quotes it
        pre = [timed(model, **inp)[1] for inp in base_inputs[1:4]]
        res["prefill_ms"] = round(1000 * float(np.median(pre)), 1)

    # --- reference path (one forward per choice), plain transformers, bf16 ------------------------------------------
    check = videos[:args.check_videos]
    ref_bf16, ref_s = timed(lambda: [[reference_scores(model, processor, q, fr) for q in qs] for fr, qs in check])
    res["reference_ms_per_question"] = round(1000 * ref_s / sum(len(qs) for _, qs in check), 1)

    # --- cuelab path ---------------------------------------------------------------------------------------------
    res["vision_attention_modules_batched"] = batch_vision_attention(model)
    scorer = HFScorer(model, processor, vision_cache=VisionCache(size=0))
    for p in prepared[:2]:  # warm-up
        scorer.score(p)
    fast_check = [scorer.score(p) for p in prepared[:args.check_videos]]
    d = [abs(a - b) for fv, rv in zip(fast_check, ref_bf16) for f, r in zip(fv, rv) for a, b in zip(f.scores, r.scores)]
    agree = [f.choice() == r.choice() for fv, rv in zip(fast_check, ref_bf16) for f, r in zip(fv, rv)]
    res["bf16_max_abs_diff_vs_reference"] = round(max(d), 4)
    res["bf16_mean_abs_diff_vs_reference"] = round(float(np.mean(d)), 4)
    res["bf16_argmax_agreement"] = f"{sum(agree)}/{len(agree)}"

    per_calls = [int(x) for x in args.per_call.split(",")]
    res["per_call"] = {}
    for k in per_calls:
        for c in chunks(prepared, k)[:2]:  # warm-up at this batch size
            scorer.score_many(c)
        secs, st = time_scorer(scorer, prepared, k)
        res["per_call"][k] = {"q_per_s": round(n_q / secs, 1), "ms_per_video": round(1000 * secs / len(videos), 1),
                              "stage_ms_per_video": st}
    best = max(per_calls, key=lambda k: res["per_call"][k]["q_per_s"])
    res["best_per_call"] = best
    # the same, but every row on its own copy of its video's prefix cache (the path before shared-prefix attention)
    copied = HFScorer(model, processor, vision_cache=VisionCache(size=0), shared_prefix=False)
    for c in chunks(prepared, best)[:2]:
        copied.score_many(c)
    secs, st = time_scorer(copied, prepared, best)
    res["copied_prefix"] = {"q_per_s": round(n_q / secs, 1), "stage_ms_per_video": st}
    res["cuelab_model_q_per_s"] = res["per_call"][1]["q_per_s"] if 1 in per_calls else None
    res["cuelab_model_ms_per_video"] = res["per_call"][best]["ms_per_video"]
    res["stage_ms_per_video"] = res["per_call"][best]["stage_ms_per_video"]
    res["peak_gib_scoring"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 1) if dev.type == "cuda" else None

    # the packed variant (one sequence, tree attention mask, no per-row cache copies)
    packed = HFScorer(model, processor, vision_cache=VisionCache(size=0), pack_choices=True)
    packed.score(prepared[0])
    packed.events = []
    _, packed_s = timed(lambda: [packed.score(p) for p in prepared])
    pst = {"vision": 0.0, "prefix": 0.0, "choices": 0.0}
    for (s0, e0), (s1, e1) in zip(packed.events, packed.events[1:]):
        if s1 != "start":
            pst[s1] += e0.elapsed_time(e1)
    packed.events = None
    res["packed_model_q_per_s"] = round(n_q / packed_s, 1)
    res["packed_stage_ms_per_video"] = {k: round(v / len(videos), 1) for k, v in pst.items()}

    if args.profile_videos:
        profile(scorer, prepared[:args.profile_videos], args.out, per_call=1)
        profile(scorer, prepared[:max(args.profile_videos, best)], args.out, per_call=best,
                name=f"profile_{best}_per_call.txt")

    # end to end: processor in prefetching threads, model on the main thread
    def prep(item):
        fr, qs = item
        return scorer.prepare(qs, fr)

    def run_e2e():
        return [scorer.score_many(c) for c in _chunks(prefetch(prep, videos, args.workers), best)]

    _, e2e_s = timed(run_e2e)
    res["cuelab_e2e_q_per_s"] = round(n_q / e2e_s, 1)
    res["workers"] = args.workers
    vis_ms, llm_ms = flop_floor_ms(model, int(prepared[0]["pixels"]["pixel_values_videos"].shape[0]), res["prompt_tokens"])
    res["flop_floor_ms_per_video"] = {"vision": round(vis_ms, 1), "llm_prefix": round(llm_ms, 1),
                                      "total": round(vis_ms + llm_ms, 1)}
    res["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 1) if dev.type == "cuda" else None

    if args.compile:
        from cuelab.model.speed import compile_blocks

        compile_blocks(model)
        for c in chunks(prepared, best)[:3]:  # compile (dynamic shapes settle after a few calls)
            scorer.score_many(c)
        comp_s, cst = time_scorer(scorer, prepared, best)
        res["compiled_model_q_per_s"] = round(n_q / comp_s, 1)
        res["compiled_stage_ms_per_video"] = cst
        _, e2e_c = timed(run_e2e)
        res["compiled_e2e_q_per_s"] = round(n_q / e2e_c, 1)
        for w in (2, 4):  # fewer processor threads: less contention with the launching thread?
            _, t_w = timed(lambda: [scorer.score_many(c) for c in _chunks(prefetch(prep, videos, w), best)])
            res[f"compiled_e2e_q_per_s_{w}_threads"] = round(n_q / t_w, 1)
        if args.profile_videos:
            profile(scorer, prepared[:max(args.profile_videos, best)], args.out, per_call=best,
                    name="profile_compiled.txt")
        for m in [*model.model.language_model.layers, *model.model.visual.blocks]:
            m._compiled_call_impl = None  # the float32 check below runs eager
        torch._dynamo.reset()

    # --- float32 equality check (TF32 off) -------------------------------------------------------------------------
    model.float()
    with torch.no_grad():
        ref32 = [[reference_scores(model, processor, q, fr) for q in qs] for fr, qs in check]
    # inputs prepared for the float32 model (pixels kept in float32, as `cuelab eval` does for it)
    fast32 = [scorer.score(scorer.prepare(qs, fr)) for fr, qs in check]
    d32 = [abs(a - b) for fv, rv in zip(fast32, ref32) for f, r in zip(fv, rv) for a, b in zip(f.scores, r.scores)]
    res["fp32_max_abs_diff_vs_reference"] = float(f"{max(d32):.2e}")
    res["fp32_questions_checked"] = sum(len(qs) for _, qs in check)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "eval_gpu.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    base_qps = 1000 / res["baseline_ms_per_question"]
    rows = [
        ["baseline: transformers generate, 16 tokens / question", res["baseline_ms_per_question"],
         round(base_qps, 1), "1.00"],
        ["reference: one forward per choice", res["reference_ms_per_question"],
         round(1000 / res["reference_ms_per_question"], 1),
         f"{res['baseline_ms_per_question'] / res['reference_ms_per_question']:.2f}"],
    ]
    for k, r in res["per_call"].items():
        rows.append([f"cuelab hf scorer, model only, {k} video(s) a call", round(1000 / r["q_per_s"], 1), r["q_per_s"],
                     f"{r['q_per_s'] / base_qps:.2f}"])
    rows.append([f"cuelab hf scorer, model only, {best} a call, rows on per-row copies of the prefix cache",
                 round(1000 / res["copied_prefix"]["q_per_s"], 1), res["copied_prefix"]["q_per_s"],
                 f"{res['copied_prefix']['q_per_s'] / base_qps:.2f}"])
    rows.append(["cuelab hf scorer, packed choices (tree mask), model only, 1 a call",
                 round(1000 / res["packed_model_q_per_s"], 1), res["packed_model_q_per_s"],
                 f"{res['packed_model_q_per_s'] / base_qps:.2f}"])
    if "compiled_model_q_per_s" in res:
        rows.append([f"cuelab hf scorer, decoder layers + vision blocks compiled, {best} a call",
                     round(1000 / res["compiled_model_q_per_s"], 1), res["compiled_model_q_per_s"],
                     f"{res['compiled_model_q_per_s'] / base_qps:.2f}"])
    rows.append([f"cuelab hf scorer, end to end ({args.workers} processor threads, {best} a call)",
                 round(1000 / res["cuelab_e2e_q_per_s"], 1), res["cuelab_e2e_q_per_s"],
                 f"{res['cuelab_e2e_q_per_s'] / base_qps:.2f}"])
    if "compiled_e2e_q_per_s" in res:
        rows.append([f"cuelab hf scorer, end to end, compiled ({args.workers} processor threads, {best} a call): "
                     "what `cuelab eval` runs on a GPU", round(1000 / res["compiled_e2e_q_per_s"], 1),
                     res["compiled_e2e_q_per_s"], f"{res['compiled_e2e_q_per_s'] / base_qps:.2f}"])
    table = markdown_table(["path", "ms / question", "questions / s", "x baseline"], rows)
    st, fl = res["stage_ms_per_video"], res["flop_floor_ms_per_video"]
    comp = (f" Compiled: {res['compiled_stage_ms_per_video']}." if "compiled_stage_ms_per_video" in res else "")
    notes = (f"Qwen3-VL-2B architecture, random weights, bf16, SDPA; {args.videos} videos x 2.5 questions x 4 "
             f"choices; {res['prompt_tokens']} prompt tokens ({res['video_tokens']} video tokens: 64 frames of "
             f"427x240 sampled to 416x256); transformers {res['transformers']}. One prefill {res['prefill_ms']} ms.\n"
             f"Where a video's time goes (cuelab, model only, {best} videos a call, "
             f"{res['cuelab_model_ms_per_video']} ms a video): vision "
             f"{st['vision']} ms, prompt embedding + shared prefix {st['prefix']} ms, all questions x choices in one "
             f"batched forward {st['choices']} ms; FLOP floor at {PEAK_TFLOPS:.0f} TFLOP/s: vision {fl['vision']} ms + "
             f"LLM prefix {fl['llm_prefix']} ms = {fl['total']} ms "
             f"({fl['total'] / res['cuelab_model_ms_per_video']:.0%} of the measured time); packed variant: "
             f"{res['packed_stage_ms_per_video']}.{comp}\n"
             f"Processor (CPU) {res['prepare_ms_per_video_1thread']} ms a video on one thread, overlapped with the "
             f"GPU by {args.workers} threads end to end. Scores vs the reference path: float32 (TF32 off) max "
             f"|diff| {res['fp32_max_abs_diff_vs_reference']} over {res['fp32_questions_checked']} questions x 4 "
             f"choices; bf16 max |diff| {res['bf16_max_abs_diff_vs_reference']} (mean "
             f"{res['bf16_mean_abs_diff_vs_reference']}), same answer on {res['bf16_argmax_agreement']}. "
             f"Peak GPU memory {res['peak_gib']} GiB.")
    (args.out / "section.md").write_text(table + "\n\n" + notes + "\n")
    if not args.no_append and not args.smoke:
        append_results("eval_gpu: choice scoring, Qwen3-VL-2B architecture, 64 frames", table, notes)


if __name__ == "__main__":
    main()
