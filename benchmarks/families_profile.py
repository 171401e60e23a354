"""Where one family's scoring time goes on a GPU: torch.profiler over one `score_many` call of 4 videos (after a
warm-up), with the inputs of benchmarks/families_gpu.py; prints the top ops by GPU time and by CPU time.

    python benchmarks/families_profile.py qwen2_5_vl llava_onevision
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import families_gpu as B  # noqa: E402
from cuelab.evaluate.hf import HFScorer, VisionCache  # noqa: E402
from cuelab.model.families import FAMILIES  # noqa: E402


def profile(name: str) -> None:
    dev = torch.device("cuda")
    model = B.build_model(name, False, dev)
    processor = B.build_processor(name, B.real_config(name))
    B.fit_token_ids(name, model, processor)
    h, w = B.frame_size(name, processor, False)
    videos = B.make_videos(8, B.SETUPS[name].frames, h, w)
    FAMILIES[name].speedups(model)
    scorer = HFScorer(model, processor, vision_cache=VisionCache(size=0))
    prepared = [scorer.prepare(qs, fr) for fr, qs in videos]
    scorer.score_many(prepared[:4])  # warm-up
    torch.cuda.synchronize()
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=acts) as prof:
        scorer.score_many(prepared[4:8])
        torch.cuda.synchronize()
    print(f"== {name}")
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=12, max_name_column_width=60))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=60))
    del model, scorer
    torch.cuda.empty_cache()


if __name__ == "__main__":
    for family in sys.argv[1:]:
        profile(family)
