"""What the question builder left out, as a few console lines: a user should see that 300 labels were skipped
without opening manifest.json."""

from __future__ import annotations

from collections import defaultdict

#: ids shown per reason (manifest.json keeps the first 50 records of each input file)
SHOWN_IDS = 5


def _by_field(records: list[dict]) -> list[str]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[r.get("field") or "entry"].append(r)
    lines = []
    for field, rows in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        ids = [str(r["video_id"]) for r in rows if r.get("video_id") is not None]
        shown = f"ids {', '.join(ids[:SHOWN_IDS])}{', ...' if len(ids) > SHOWN_IDS else ''}; " if ids else ""
        lines.append(f"  {len(rows)} x {field}: {shown}e.g. {rows[0].get('reason')}")
    return lines


def _input_lines(inputs: dict, key: str, count_key: str, what: str) -> list[str]:
    count = inputs.get(count_key, 0)
    if not count:
        return []
    path = inputs.get(key)
    records = [r for r in inputs.get("errors", []) if r.get("file") == path]
    listed = "" if len(records) >= count else f" (the first {len(records)} by reason; all counted in manifest.json)"
    return [f"{path}: {count} {what} skipped{listed}"] + _by_field(records)


def skipped_summary(manifest: dict) -> list[str]:
    """Console lines: malformed label entries and annotated videos skipped (count per field, the first ids and an
    example reason), then the videos left out per reason. Empty when nothing was left out."""
    inputs = manifest.get("inputs") or {}
    lines = _input_lines(inputs, "labels", "label_errors", "malformed label entries")
    lines += _input_lines(inputs, "annotations", "annotation_errors", "videos with malformed annotations")
    videos = {k: v for k, v in (manifest.get("dropped") or {}).get("videos", {}).items() if v}
    if videos:
        per = ", ".join(f"{n} {why}" for why, n in sorted(videos.items(), key=lambda kv: -kv[1]))
        line = f"videos left out: {per}"
        placeholders = {k: v for k, v in manifest["dropped"].get("placeholders", {}).items() if v}
        if placeholders:
            line += " (noisy placeholders: " + ", ".join(f"{n} {why}" for why, n in placeholders.items()) + ")"
        lines.append(line)
    return lines
