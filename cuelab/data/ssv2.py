"""SSv2 label entries: `[{"id", "label", "template", "placeholders"}]` (train.json / validation.json)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cuelab.errors import DataError
from cuelab.fsutil import atomic_write_json, check_video_id, load_json

SLOT_RE = re.compile(r"\[([^\]]+)\]")


@dataclass(frozen=True)
class LabelEntry:
    id: str
    label: str
    template: str
    placeholders: list[str] = field(default_factory=list)

    @property
    def slots(self) -> list[str]:
        """The template's slot names in order, e.g. ['something', 'something'] (lower-cased)."""
        return [s.lower() for s in SLOT_RE.findall(self.template)]

    def to_json(self) -> dict:
        return asdict(self)


def parse_label_entry(raw: object, *, file: str, index: int) -> LabelEntry:
    if not isinstance(raw, dict):
        raise DataError(f"entry {index} is {type(raw).__name__}, expected an object", file=file)
    vid = raw.get("id")
    for key in ("id", "label", "template"):
        if key not in raw:
            raise DataError(f"entry {index} has no {key!r}", file=file,
                            video_id=str(vid) if vid is not None else None, field=key)
        if not isinstance(raw[key], (str, int)) or isinstance(raw[key], bool):
            raise DataError(f"entry {index}: {key!r} must be a string", file=file, video_id=str(vid), field=key)
    placeholders = raw.get("placeholders", [])
    if not isinstance(placeholders, list):
        raise DataError("placeholders must be a list", file=file, video_id=str(vid), field="placeholders")
    return LabelEntry(id=check_video_id(str(vid), file=file), label=str(raw["label"]),
                      template=str(raw["template"]), placeholders=[p if isinstance(p, str) else str(p)
                                                                   for p in placeholders])


def load_labels(path: str | Path) -> list[LabelEntry]:
    """Read an SSv2 label file; errors name the file, the entry's video id and the field."""
    path = Path(path)
    data = load_json(path)
    if not isinstance(data, list):
        raise DataError(f"expected a JSON list of label entries, got {type(data).__name__}", file=str(path))
    entries = [parse_label_entry(raw, file=str(path), index=i) for i, raw in enumerate(data)]
    seen: set[str] = set()
    for e in entries:
        if e.id in seen:
            raise DataError("duplicate video id", file=str(path), video_id=e.id, field="id")
        seen.add(e.id)
    return entries


def save_labels(path: str | Path, entries: list[LabelEntry]) -> None:
    atomic_write_json(path, [e.to_json() for e in entries], indent=None)


def load_templates(path: str | Path) -> dict[str, int]:
    """SSv2 labels.json: template (with 'something') -> class index."""
    data = load_json(path)
    if not isinstance(data, dict):
        raise DataError("expected an object template -> index", file=str(path))
    return {k: int(v) for k, v in data.items()}
