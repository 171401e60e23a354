"""The attention stage, top to bottom: choose the questions, and for each model and condition (plain first) run
one prompt per question, record where the answer position looks, append a record, re-aggregate, draw.

Out folder: records/<model>__<condition>.jsonl (one line per question; a rerun skips what is there),
rows/<model>__<condition>__<question>.npz (full rows of the overlay questions), errors.jsonl,
attention_results.json / .csv (+ attention_paired.csv, attention_heads.csv), attention_lift.png, overlays/.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cuelab.attention import grid as G
from cuelab.attention.measures import aggregate, aggregate_heads, paired, question_measures, top_k
from cuelab.config import ExperimentConfig
from cuelab.data.something_else import load_annotations
from cuelab.errors import DataError
from cuelab.fsutil import (append_jsonl, atomic_write_bytes, atomic_write_json, atomic_write_text, read_jsonl,
                           repair_partial_line, safe_name)
from cuelab.model.families import family_of, frame_spec
from cuelab.question import load_questions
from cuelab.tracks import VideoTracks


@dataclass(frozen=True)
class ModelSpec:
    name: str  # "pretrained" / "finetuned": the row label in the results
    path: str  # hub id or folder
    adapter: str | None = None  # PEFT LoRA folder on top of `path`


def read_questions(path: str | Path) -> list[dict]:
    """The questions file's records (cuelab.question's loader), refused whole when a question's id or video cannot
    name a file or an id repeats (both become parts of the rows and overlay file names); a question whose prompt
    cannot be built is reported in errors.jsonl when it is measured."""
    return [q.record for q in load_questions(path, strict=False)]


def rows_path(out_dir: str | Path, model: str, condition: str, question_id: str) -> Path:
    """out_dir/rows/<model>__<condition>__<question>.npz; no part may hold '__' or leave the folder."""
    parts = (safe_name(model, what="model name", field="model"),
             safe_name(condition, what="condition", field="condition"),
             safe_name(str(question_id), what="question id", field="id"))
    return Path(out_dir) / "rows" / ("__".join(parts) + ".npz")


def select_questions(questions: list[dict], tracks: dict[str, VideoTracks], n: int, seed: int) -> list[dict]:
    """A seeded choice of n test questions whose target object has boxes, in id order."""
    usable = sorted((q for q in questions if q.get("split") in (None, "", "test")
                     and q.get("target_object") not in (None, "") and q.get("video") in tracks
                     and tracks[q["video"]].tracks.get(str(q["target_object"]))), key=lambda q: str(q["id"]))
    idx = np.random.default_rng(seed).permutation(len(usable))[:n]
    return [usable[i] for i in sorted(idx)]


def _r(values) -> list:
    return _nan_to_none(np.round(np.asarray(values, np.float64), 6).tolist())  # undefined (no box area) -> null


def measure_question(model, processor, q: dict, condition: str, tracks: VideoTracks, videos_root: Path, cfg:
                     ExperimentConfig, plain_sinks: list | None, per_head: bool):
    """(record, rows, frames, boxes) for one question in one condition."""
    from cuelab.attention.collect import attention_to_video
    from cuelab.model.prompt import build_inputs, prompt_spec
    from cuelab.video.io import find_video, sample_frames

    family = family_of(model)
    spec, acfg, vid = frame_spec(cfg.frames_eval, processor), cfg.attention, q["video"]
    frames = sample_frames(find_video(Path(videos_root) / condition, vid), spec, vid)
    inputs = build_inputs(processor, q, frames, spec=prompt_spec(cfg, hint=cfg.eval.hint))
    grid = family.video_grid(inputs, processor)
    G.check_grid(grid, frames)

    boxes = G.fill_pairs(grid, G.resized_boxes(tracks.tracks[str(q["target_object"])], frames, acfg.max_box_gap))
    box_cov, valid = G.boxes_coverage(grid, boxes)
    if not valid.any():
        raise DataError("the target object has no box near any sampled frame", video_id=vid, field="target_object")
    cue_cov = obj_only = None
    if condition != "plain":
        plain = sample_frames(find_video(Path(videos_root) / "plain", vid), spec, vid)
        if plain.frames.shape != frames.frames.shape:
            raise DataError(f"condition {condition!r} changes the frames ({frames.width}x{frames.height} vs plain "
                            f"{plain.width}x{plain.height}, {frames.n} vs {plain.n} sampled): the object boxes do "
                            "not map onto it", video_id=vid, field="condition")
        drawn = G.cue_pixels(frames.frames, plain.frames, acfg.cue_threshold)
        cue_cov = G.mask_coverage(grid, drawn)
        obj = G.boxes_mask(boxes, frames.resized_height, frames.resized_width)
        obj_only = G.mask_coverage(grid, obj & ~drawn)

    rows, mass, positions = attention_to_video(model, inputs, family.video_token_id(model), per_head)  # one call
    # the grid's cells among the video tokens (a family may close the video with a token that is no cell)
    rows = rows[..., np.searchsorted(positions, family.grid_positions(inputs["input_ids"], model))]
    mean_rows = rows.mean(1) if per_head else rows
    own = top_k(mean_rows, acfg.sink_tokens)
    sinks = np.asarray(plain_sinks, int).reshape(len(own), -1) if plain_sinks is not None else own
    m = question_measures(rows, mass, box_cov, valid, sinks, cue_cov, obj_only)
    rec = {"question_id": q["id"], "video": vid, "kind": q.get("kind"), "target_object": str(q["target_object"]),
           "model": None, "condition": condition, "grid": [grid.t, grid.h, grid.w],
           "cell": [grid.patch, grid.merge, grid.temporal_patch], "layers": len(mean_rows),
           "valid_tokens": int(valid.sum()), "box_share": round(float(box_cov[valid].mean()), 6),
           "cue_share": None if cue_cov is None else round(float(cue_cov.mean()), 6),
           "sinks": own.tolist(), "sinks_used": "plain" if plain_sinks is not None else "own"}
    rec.update({k: _r(v) for k, v in m.items()})
    return rec, mean_rows, frames, boxes


def _save_rows(path: Path, rows: np.ndarray, frames, boxes: np.ndarray, rec: dict) -> None:
    buf = io.BytesIO()
    np.savez(buf, rows=rows.astype(np.float32), boxes=boxes, grid=np.array(rec["grid"]), cell=np.array(rec["cell"]),
             sinks=np.array(rec["sinks"]), indices=np.array(frames.indices), video=np.array(rec["video"]),
             condition=np.array(rec["condition"]), question=np.array(rec["question_id"]))
    atomic_write_bytes(path, buf.getvalue())


def write_results(out_dir: Path, settings: dict) -> dict:
    """Re-aggregate every record under out_dir/records into the results files (atomically); returns the results."""
    import pandas as pd

    records = []
    for f in sorted((out_dir / "records").glob("*.jsonl")):
        records += list(read_jsonl(f, skip_partial=True))
    results = {"settings": settings, "rows": aggregate(records), "paired": paired(records),
               "heads": aggregate_heads(records)}
    atomic_write_json(out_dir / "attention_results.json", _nan_to_none(results))
    for key, name in (("rows", "attention_results.csv"), ("paired", "attention_paired.csv"),
                      ("heads", "attention_heads.csv")):
        if results[key]:
            atomic_write_text(out_dir / name, pd.DataFrame(results[key]).to_csv(index=False))
    return results


def _nan_to_none(obj):
    if isinstance(obj, float):
        return None if obj != obj else obj
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return obj


def run_attention(cfg: ExperimentConfig, models: list[ModelSpec], questions_path: str | Path,
                  videos_root: str | Path, annotations_path: str | Path, out_dir: str | Path,
                  device: str | None = None) -> dict:
    """The whole stage; resumable per (model, condition, question). Returns the results dict."""
    import torch

    from cuelab.attention.plots import make_overlays, plot_lift_curves
    from cuelab.model.load import load_model

    out_dir, acfg = Path(out_dir), cfg.attention
    for spec in models:  # names of the records, rows and overlay files: checked before any work
        safe_name(spec.name, what="model name", field="model")
    for cond in acfg.conditions:
        safe_name(cond, what="condition", field="attention.conditions")
    annotations = load_annotations(annotations_path, strict=False)
    questions = select_questions(read_questions(questions_path), annotations.videos, acfg.n, cfg.seed)
    if not questions:
        raise DataError("no test question has a target object with boxes", file=str(questions_path))
    conditions = sorted(dict.fromkeys(acfg.conditions), key=lambda c: (c != "plain",))
    overlay_ids = {q["id"] for q in questions[: acfg.overlays]}
    settings = {"questions": len(questions), "question_ids": [q["id"] for q in questions],
                "conditions": conditions, "models": [s.name for s in models], "sink_tokens": acfg.sink_tokens,
                "per_head": acfg.per_head, "frames": cfg.frames_eval.model_dump(), "seed": cfg.seed,
                "cue_threshold": acfg.cue_threshold, "max_box_gap": acfg.max_box_gap}
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    processor = None
    for spec in models:
        model, processor = load_model(spec.path, dtype=cfg.model.dtype, attn_implementation="eager", device=device,
                                      adapter=spec.adapter)
        for cond in conditions:
            path = out_dir / "records" / f"{spec.name}__{cond}.jsonl"
            repair_partial_line(path)
            done = {r["question_id"] for r in read_jsonl(path, skip_partial=True)} if path.exists() else set()
            plain_path = out_dir / "records" / f"{spec.name}__plain.jsonl"
            plain_sinks = {r["question_id"]: r["sinks"] for r in read_jsonl(plain_path, skip_partial=True)} \
                if cond != "plain" and plain_path.exists() else {}
            todo = [q for q in questions if q["id"] not in done]
            for q in tqdm(todo, desc=f"attention {spec.name}/{cond}", disable=not todo):
                try:
                    rec, rows, frames, boxes = measure_question(
                        model, processor, q, cond, annotations.videos[q["video"]], Path(videos_root), cfg,
                        plain_sinks.get(q["id"]), acfg.per_head)
                except DataError as e:
                    append_jsonl(out_dir / "errors.jsonl", [{"model": spec.name, "condition": cond,
                                                             "question_id": q["id"], **e.as_record()}])
                    continue
                rec["model"] = spec.name
                if q["id"] in overlay_ids:
                    _save_rows(rows_path(out_dir, spec.name, cond, q["id"]), rows, frames, boxes, rec)
                append_jsonl(path, [rec])
            results = write_results(out_dir, settings)
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    results = write_results(out_dir, settings)
    plot_lift_curves(results, out_dir / "attention_lift.png")
    make_overlays(out_dir, videos_root, frame_spec(cfg.frames_eval, processor))
    return results
