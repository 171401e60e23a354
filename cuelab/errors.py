"""One error type for bad input: it always names the file, and the video id and field when known."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data. The message names the file, the video id and the field where they are known."""

    def __init__(self, message: str, *, file: str | None = None, video_id: str | None = None,
                 field: str | None = None):
        self.file, self.video_id, self.field, self.reason = file, video_id, field, message
        where = []
        if file:
            where.append(f"file {file}")
        if video_id is not None:
            where.append(f"video {video_id}")
        if field:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)

    def as_record(self) -> dict:
        """A JSON-able record for errors.jsonl files."""
        return {"file": self.file, "video_id": self.video_id, "field": self.field, "reason": self.reason}
