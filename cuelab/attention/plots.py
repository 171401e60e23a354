"""Pictures for the report: per-layer lift curves per condition, and plain-vs-cue heatmap overlays (GIF + PNG still).

The heatmap is the answer position's attention to each video token, averaged over layers (each layer's video
row normalised first), drawn on its own 32 x 32 cell of the frame it covers (no smoothing, so what looks like
a cell is one token); the target object's box is outlined in white.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np

from cuelab.errors import DataError
from cuelab.fsutil import atomic_write_bytes, safe_name


def _png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    return buf.getvalue()


def plot_lift_curves(results: dict, out_png: str | Path) -> Path:
    """Lift per layer, one line per condition with its 95% CI band; a column per model, rows with and without
    the sink tokens. `results` is attention_results.json as loaded (or as run_attention returns it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = [r for r in results["rows"] if r["layer"] != "mean"]
    models = sorted({r["model"] for r in rows}, key=lambda m: (m != "pretrained", m != "finetuned", m))
    conds = sorted({r["condition"] for r in rows}, key=lambda c: (c != "plain", c))
    fig, axes = plt.subplots(2, max(1, len(models)), figsize=(4.2 * max(1, len(models)), 6.4), squeeze=False,
                             sharex=True)
    for col, model in enumerate(models):
        for row_i, (metric, title) in enumerate((("lift", "all video tokens"), ("lift_ns", "sinks left out"))):
            ax = axes[row_i][col]
            for ci, cond in enumerate(conds):
                rs = sorted((r for r in rows if r["model"] == model and r["condition"] == cond),
                            key=lambda r: r["layer"])
                x = [r["layer"] for r in rs]
                y = np.array([np.nan if r[metric] is None else r[metric] for r in rs], float)
                lo = np.array([np.nan if r[f"{metric}_lo"] is None else r[f"{metric}_lo"] for r in rs], float)
                hi = np.array([np.nan if r[f"{metric}_hi"] is None else r[f"{metric}_hi"] for r in rs], float)
                n = max((r[f"{metric}_n"] for r in rs), default=0)
                ax.plot(x, y, marker="o", ms=3, color=f"C{ci}", label=f"{cond} (n={n})")
                ax.fill_between(x, lo, hi, color=f"C{ci}", alpha=0.18, linewidth=0)
            ax.axhline(1.0, color="gray", lw=0.8, ls="--")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(f"{model}: {title}", fontsize=10)
            ax.set_ylabel("lift inside object box")
            if row_i == 1:
                ax.set_xlabel("decoder layer")
            ax.legend(fontsize=8)
    fig.tight_layout()
    out_png = Path(out_png)
    atomic_write_bytes(out_png, _png_bytes(fig))
    plt.close(fig)
    return out_png


def layer_mean_map(rows: np.ndarray) -> np.ndarray:
    """(layers, n) attention rows -> (n,) mean over layers of each layer's row normalised to sum 1."""
    rows = np.asarray(rows, np.float64)
    return (rows / np.clip(rows.sum(-1, keepdims=True), 1e-12, None)).mean(0)


def heat_frame(frame: np.ndarray, heat: np.ndarray, cell: int, vmax: float, box=None, scale: int = 1,
               label: str = "") -> np.ndarray:
    """One RGB frame with the (h, w) heat of its temporal cell blended in, each value on its own cell."""
    import matplotlib

    h = np.clip(np.asarray(heat, np.float64) / max(vmax, 1e-12), 0, 1)
    h = np.kron(h, np.ones((cell, cell)))[: frame.shape[0], : frame.shape[1]]
    color = matplotlib.colormaps["inferno"](h)[..., :3] * 255
    alpha = (0.1 + 0.55 * h)[..., None]  # cold cells leave the frame readable
    out = (frame * (1 - alpha) + color * alpha).astype(np.uint8)
    if scale > 1:
        out = cv2.resize(out, (out.shape[1] * scale, out.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    if box is not None and np.all(np.isfinite(box)):
        x1, y1, x2, y2 = (int(round(v * scale)) for v in box)
        cv2.rectangle(out, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), (255, 255, 255), max(1, scale))
    if label:
        cv2.putText(out, label, (4, 14 * max(1, scale // 2) + 2), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * max(1, scale // 2),
                    (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _load(path: Path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def overlay_frames(plain: dict, cued: dict, plain_frames, cued_frames, cue: str) -> list[np.ndarray]:
    """Side-by-side frames (plain | cued), one per temporal cell, from two saved rows files and their frames."""
    from cuelab.attention.grid import VideoGrid

    cell = plain["cell"] if "cell" in plain else ()  # patch, merge, temporal patch (files before: Qwen3-VL's)
    grid = VideoGrid(*(int(x) for x in plain["grid"]), *(int(x) for x in cell))
    maps = [grid.to_map(layer_mean_map(d["rows"])) for d in (plain, cued)]
    vmax = float(np.quantile(np.concatenate([m.ravel() for m in maps]), 0.99))
    scale = max(1, int(np.ceil(320 / plain_frames.resized_width)))
    out = []
    for t in range(grid.t):
        p = grid.frames_of(t)[0]
        panels = [heat_frame(fr.frames[p], m[t], grid.cell_px, vmax, d["boxes"][p], scale, f"{name} t={t}")
                  for fr, m, d, name in ((plain_frames, maps[0], plain, "plain"), (cued_frames, maps[1], cued, cue))]
        gap = np.full((panels[0].shape[0], 4 * scale, 3), 255, np.uint8)
        out.append(np.concatenate([panels[0], gap, panels[1]], axis=1))
    return out


def rows_by_question(rows_dir: Path, model: str | None = None) -> dict[tuple[str, str], dict[str, Path]]:
    """(model, question) -> {condition: rows file}, read from the names rows/<model>__<condition>__<question>.npz.
    The names are split, never globbed with an id in the pattern (a '[' or '*' in an id would match other
    questions' files); a name that is not three safe parts is not a rows file and is left alone."""
    out: dict[tuple[str, str], dict[str, Path]] = {}
    for path in sorted(rows_dir.glob("*.npz")):
        parts = path.stem.split("__")
        if len(parts) != 3:
            continue
        try:
            m, cond, qid = (safe_name(p) for p in parts)
        except DataError:
            continue
        if model is None or m == model:
            out.setdefault((m, qid), {})[cond] = path
    return out


def make_overlays(attention_dir: str | Path, videos_root: str | Path, spec, model: str | None = None) -> list[Path]:
    """For every question whose rows were saved in plain and a cue condition: overlays/<model>__<question>__<cue>.gif
    (one frame per frame pair) and a .png still of the middle frame pair. Returns the GIF paths."""
    from PIL import Image

    from cuelab.video.io import find_video, sample_frames

    attention_dir = Path(attention_dir)
    out = []
    for (m, qid), by_cond in sorted(rows_by_question(attention_dir / "rows", model).items()):
        if "plain" not in by_cond:
            continue
        plain = _load(by_cond["plain"])
        vid = str(plain["video"])
        plain_frames = sample_frames(find_video(Path(videos_root) / "plain", vid), spec, vid)
        for cue, cued_path in sorted(by_cond.items()):
            if cue == "plain":
                continue
            cued_frames = sample_frames(find_video(Path(videos_root) / cue, vid), spec, vid)
            if cued_frames.frames.shape != plain_frames.frames.shape:
                continue  # a cue that changes the frame size has no side-by-side
            frames = overlay_frames(plain, _load(cued_path), plain_frames, cued_frames, cue)
            gif = attention_dir / "overlays" / f"{m}__{qid}__{cue}.gif"
            buf = io.BytesIO()
            images = [Image.fromarray(f) for f in frames]
            images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=600, loop=0)
            atomic_write_bytes(gif, buf.getvalue())
            still = io.BytesIO()
            Image.fromarray(frames[len(frames) // 2]).save(still, format="PNG")
            atomic_write_bytes(gif.with_suffix(".png"), still.getvalue())
            out.append(gif)
    return out
