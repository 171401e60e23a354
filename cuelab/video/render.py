"""Render every condition of every video: `out_dir/<cue>/<video_id>.mp4`.

One task per video: it is decoded once, then each cue to do is drawn and encoded (decoding is a large part
of the cost, so sharing it beats one task per (video, cue)). Tasks run in a process pool; every output is
written atomically by write_video (temp file + rename), then its provenance sidecar (cuelab.video.provenance).
A rerun skips an output whose sidecar matches what it would be made from now (source video, cue and settings,
boxes, codec, RENDER_VERSION) and re-renders the others ("stale"); `force` re-renders everything. A stale output
is deleted before its video is rendered again, so a re-render that fails leaves no outdated video behind.
A video that fails is logged to `out_dir/errors.jsonl` (video id, cue, reason) and the run goes on.
`shard=(i, n)` renders every n-th video of the sorted id list, for job arrays.

A run holds the folder's render lock (cuelab.locks) for its shard: a second run into the same folder is refused
with a message naming the first. Temp files left by a killed run are removed only under that lock, so only
once their owner is gone.
"""

from __future__ import annotations

import multiprocessing as mp
import re
import time
import traceback
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from pathlib import Path

from tqdm import tqdm

from cuelab.errors import DataError
from cuelab.fsutil import append_jsonl, atomic_write_json, check_video_id
from cuelab.locks import folder_lock
from cuelab.tracks import VideoTracks
from cuelab.video.cues import get_cue
from cuelab.video.settings import PRESET, RenderSettings  # noqa: F401 (PRESET: the default, for benchmarks)
from cuelab.video.io import find_video, read_video, write_video
from cuelab.video.provenance import (read_provenance, remove_output, render_provenance, source_identity,
                                     write_provenance)



def output_path(out_dir: str | Path, cue: str, video_id: str) -> Path:
    return Path(out_dir) / cue / f"{video_id}.mp4"


_TEMP_RE = re.compile(r"^\.(?P<id>.+)\.[A-Za-z0-9_]{8}\.mp4$")  # write_video's temp names: .<id>.XXXXXXXX.mp4


def remove_stale_temps(out_dir: Path, cues: list[str], video_ids: set[str]) -> int:
    """Delete the temp files a killed run left for these videos' outputs. Call only while holding the folder's
    render lock for this shard: the lock makes this run the one live writer of these videos, so whoever wrote
    the temp files is gone. One listing per cue folder for the whole run (per video it was quadratic in the
    folder's size); only this shard's videos are touched, so a shard running beside this one keeps the temp files
    it is writing. Returns how many were removed."""
    removed = 0
    for cue in cues:
        folder = out_dir / cue
        if not folder.is_dir():
            continue
        for f in folder.iterdir():
            m = _TEMP_RE.match(f.name)
            if m and m["id"] in video_ids:
                f.unlink(missing_ok=True)
                removed += 1
    return removed


def render_video(video_path: str | Path, video_id: str, tracks: VideoTracks | None, cues: list[str],
                 out_dir: str | Path, settings: RenderSettings = RenderSettings(), source: dict | None = None
                 ) -> list[dict]:
    """Decode one video once, write every cue in `cues`, each followed by its provenance sidecar (`source`: the
    source identity the caller checked against; taken here when None). Returns one record per cue:
    {"cue", "status": "rendered" | "failed", "frames", "error"?}. Never raises for bad input."""
    try:
        source = source if source is not None else source_identity(video_path)  # before decoding: never newer
        video = read_video(video_path, video_id)
    except DataError as e:
        return [{"cue": c, "status": "failed", "frames": 0, "error": e.as_record()} for c in cues]
    out = []
    for name in cues:
        try:
            if tracks is None and name != "plain":
                raise DataError("no box annotations for this video (only `plain` can be rendered)",
                                video_id=video_id, field="annotations")
            cue = settings.cue(name)
            layout = cue.layout(tracks if tracks is not None else VideoTracks(video_id, {}), video.width,
                                video.height)
            dest = output_path(out_dir, name, video_id)
            frames = (settings.frame(cue.draw(f, t, layout)) for t, f in enumerate(video.frames))
            write_video(dest, frames, settings.fps or video.fps, crf=settings.crf, preset=settings.preset)
            write_provenance(dest, render_provenance(source, name, tracks, settings), video_path)
            past_end = 0 if tracks is None else sum(t >= video.n_frames for tr in tracks.tracks.values() for t in tr)
            out.append({"cue": name, "status": "rendered", "frames": video.n_frames, "boxes_past_end": past_end})
        except DataError as e:
            out.append({"cue": name, "status": "failed", "frames": 0, "error": e.as_record()})
        except Exception as e:  # a bug or an encoder failure on one video must not stop a large run
            out.append({"cue": name, "status": "failed", "frames": 0,
                        "error": {"file": str(video_path), "video_id": video_id, "field": None,
                                  "reason": f"{type(e).__name__}: {e}",
                                  "traceback": traceback.format_exc(limit=3)}})
    return out


def _task(args: tuple) -> tuple[str, list[dict], float]:
    """One video in a worker; also returns the CPU seconds it took (wall time misleads on shared cores)."""
    video_id, video_path, tracks, cues, out_dir, settings, source = args
    t0 = time.process_time()
    results = render_video(video_path, video_id, tracks, cues, out_dir, settings, source)
    return video_id, results, time.process_time() - t0


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # parallelism comes from the pool; OpenCV threads would only compete with it


def shard_ids(video_ids: list[str], shard: tuple[int, int]) -> list[str]:
    i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise DataError(f"shard {i}/{n} needs 0 <= i < n", field="shard")
    return sorted(video_ids)[i::n]


def summary_path(out_dir: str | Path, shard: tuple[int, int] = (0, 1)) -> Path:
    i, n = shard
    return Path(out_dir) / ("render_summary.json" if n == 1 else f"render_summary.shard{i}of{n}.json")


def _plan_video(videos_dir, annotations: dict[str, VideoTracks], cues: list[str], out_dir: Path,
                settings: RenderSettings, force: bool, vid: str) -> dict:
    """What one video needs: the cues to render (missing, stale or forced; the stale and forced outputs are
    deleted here, so a re-render that fails leaves no outdated video) and how each existing output was judged.
    A video whose source is missing keeps its outputs ("unverified": they cannot be checked) and fails the rest."""
    outs = {c: output_path(out_dir, c, vid) for c in cues}
    have = [c for c in cues if outs[c].exists()]
    plan = {"vid": vid, "todo": [c for c in cues if c not in have], "skipped": 0, "stale": 0, "forced": 0,
            "unverified": 0, "path": None, "source": None, "error": None}
    try:
        path = find_video(videos_dir, vid)
        plan.update(path=str(path), source=source_identity(path))
    except DataError as e:
        return {**plan, "unverified": len(have), "error": e}
    for c in have:
        if force:
            plan["forced"] += 1
        elif read_provenance(outs[c]) != render_provenance(plan["source"], c, annotations.get(vid), settings):
            plan["stale"] += 1
        else:
            plan["skipped"] += 1
            continue
        remove_output(outs[c])
        plan["todo"].append(c)
    plan["todo"] = [c for c in cues if c in plan["todo"]]  # in the order asked for
    return plan


def _plan(videos_dir, annotations: dict[str, VideoTracks], cues: list[str], out_dir: Path, ids: list[str],
          settings: RenderSettings, force: bool, workers: int,
          progress: bool) -> tuple[dict, list[tuple], list[tuple]]:
    """Counts so far, the render tasks and the (video, failure records) of videos without a source. Checking a
    source reads up to 64 MiB of it (cuelab.digest), so videos are checked in `workers` threads (hashing and
    file reads release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    check = partial(_plan_video, videos_dir, annotations, cues, out_dir, settings, force)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        plans = list(tqdm(pool.map(check, ids), total=len(ids), unit="video", desc="check", disable=not progress))
    counts = {k: sum(p[k] for p in plans) for k in ("skipped", "stale", "forced", "unverified")}
    tasks, missing = [], []
    for p in plans:
        if not p["todo"]:
            continue
        if p["error"] is not None:
            missing.append((p["vid"], [{"cue": c, "status": "failed", "frames": 0, "error": p["error"].as_record()}
                                       for c in p["todo"]]))
        else:
            tasks.append((p["vid"], p["path"], annotations.get(p["vid"]), p["todo"], str(out_dir), settings,
                          p["source"]))
    return counts, tasks, missing


def render_videos(videos_dir: str | Path, annotations: dict[str, VideoTracks], cues: list[str],
                  out_dir: str | Path, workers: int = 2, shard: tuple[int, int] = (0, 1),
                  video_ids: list[str] | None = None, settings: RenderSettings = RenderSettings(),
                  progress: bool = True, force: bool = False) -> dict:
    """Render `cues` for every video of `video_ids` (default: every annotated video) in this shard, holding the
    folder's render lock for this shard (cuelab.locks.FolderBusy when another run holds it).
    Returns (and writes to out_dir/render_summary[.shard<i>of<n>].json) counts of outputs rendered (of them
    `stale`: there but made from other inputs or settings, and `forced`: re-rendered by `force`), skipped (up to
    date), unverified (kept: their source video is missing) and failed, plus frames and seconds."""
    t0 = time.perf_counter()
    for c in cues:
        get_cue(c)  # an unknown cue name fails before any work
    out_dir = Path(out_dir)
    ids = shard_ids([check_video_id(v) for v in (video_ids if video_ids is not None else annotations)], shard)
    with folder_lock(out_dir, "render", shard):
        planned, tasks, missing = _plan(videos_dir, annotations, list(cues), out_dir, ids,
                                        settings, force, workers, progress)
        counts = {"rendered": 0, **planned, "failed": 0, "frames": 0, "boxes_past_end": 0, "cpu_seconds": 0.0}
        remove_stale_temps(out_dir, list(cues), {t[0] for t in tasks})
        bar = tqdm(total=len(ids), initial=len(ids) - len(tasks) - len(missing), unit="video", desc="render",
                   disable=not progress)

        def collect(video_id: str, results: list[dict], cpu: float = 0.0) -> None:
            counts["cpu_seconds"] += cpu
            errors = []
            for r in results:
                if r["status"] == "rendered":
                    counts["rendered"] += 1
                    counts["frames"] += r["frames"]
                    counts["boxes_past_end"] += r.get("boxes_past_end", 0)
                else:
                    counts["failed"] += 1
                    errors.append({**r["error"], "video_id": video_id, "cue": r["cue"]})
            if errors:
                append_jsonl(out_dir / "errors.jsonl", errors)
            bar.update(1)
            bar.set_postfix(rendered=counts["rendered"], failed=counts["failed"], refresh=False)

        for vid, results in missing:
            collect(vid, results)
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                collect(*_task(task))
        else:
            _run_pool(tasks, workers, collect)
        bar.close()
        seconds = time.perf_counter() - t0
        counts["cpu_seconds"] = round(counts["cpu_seconds"], 3)
        summary = {**counts, "videos": len(ids), "cues": list(cues), "shard": list(shard), "workers": workers,
                   "settings": settings.to_json(), "force": force, "seconds": round(seconds, 3),
                   "frames_per_second": round(counts["frames"] / seconds, 1) if seconds > 0 else None,
                   "out_dir": str(out_dir)}
        atomic_write_json(summary_path(out_dir, shard), summary)
    return summary


def _pool_context():
    """forkserver: workers are forked from a clean server process that preloaded this module and the main
    module (so a new worker does not import them again). Plain fork deadlocked here: a parent that had used
    OpenCV's thread pool left its locks held in the child (seen in cv2.setNumThreads). Like every non-fork
    start method, a script calling render_videos needs the `if __name__ == "__main__":` guard."""
    methods = mp.get_all_start_methods()
    if "forkserver" not in methods:
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["__main__", "cuelab.video.render"])
    return ctx


def _run_pool(tasks: list[tuple], workers: int, collect) -> None:
    """At most 4 tasks per worker in flight, so a 200k-video run does not hold every task's tracks at once.
    A worker that dies (e.g. out of memory) breaks the pool: the tasks in flight are logged as failed and a new
    pool goes on with the rest, unless the broken pool finished nothing (then the rest are logged as failed)."""
    pending: deque[tuple] = deque(tasks)
    while pending:
        running: dict[Future, tuple] = {}
        finished, broken = 0, False
        with ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context(), initializer=_init_worker) as pool:
            while (pending or running) and not broken:
                while pending and len(running) < 4 * workers:
                    task = pending.popleft()
                    running[pool.submit(_task, task)] = task
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    task = running.pop(fut)
                    try:
                        result = fut.result()
                    except BrokenProcessPool as e:
                        broken = True
                        _fail_task(task, collect, f"worker process died: {e}")
                        continue
                    finished += 1
                    collect(*result)
        for task in running.values():  # only left when the pool broke
            _fail_task(task, collect, "worker process died while this video was in flight")
        if broken and not finished:
            while pending:
                _fail_task(pending.popleft(), collect, "worker processes keep dying; not retried")


def _fail_task(task: tuple, collect, reason: str) -> None:
    record = {"file": task[1], "video_id": task[0], "field": None, "reason": reason}
    collect(task[0], [{"cue": c, "status": "failed", "frames": 0, "error": record} for c in task[3]])
