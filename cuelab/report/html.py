"""Markdown -> one self-contained HTML file (images embedded as data URIs, no external requests)."""

from __future__ import annotations

import base64
import html
import mimetypes
import re
from pathlib import Path

import markdown

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#1d1d1f;line-height:1.45}
table{border-collapse:collapse;margin:1em 0;font-size:0.92em}th,td{border:1px solid #ccc;padding:4px 8px;
text-align:right}th{background:#f2f2f7}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #ddd;margin:0.3em 0}code,pre{background:#f5f5f5;border-radius:4px}
pre{padding:0.8em;overflow-x:auto;font-size:0.85em}h1,h2{border-bottom:1px solid #eee;padding-bottom:0.2em}
.note{color:#666;font-size:0.9em}
blockquote{margin:1em 0;padding:0.6em 1em;border-left:4px solid #0a84ff;background:#f0f6ff}
"""


def _embed(match: re.Match, base: Path, root: Path) -> str:
    """Inline an image the report links to, only when it lies inside the run folder `root`: a link (from an id
    or a caption) must never pull another file of the machine into a report that is shared."""
    src = match.group(2)
    path = (base / src).resolve()
    if src.startswith(("data:", "http:", "https:")) or not path.is_file() or root not in path.parents:
        return match.group(0)
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    data = base64.b64encode(path.read_bytes()).decode()
    return f'{match.group(1)}data:{mime};base64,{data}{match.group(3)}'


def markdown_to_html(md_text: str, base: Path, title: str, root: Path | None = None) -> str:
    """`base`: the folder image links are relative to; `root`: the only folder images are embedded from
    (default: base's parent, the run folder)."""
    body = markdown.markdown(md_text, extensions=["tables", "fenced_code"])
    root = Path(root or Path(base).parent).resolve()
    body = re.sub(r'(<img[^>]*src=")([^"]+)(")', lambda m: _embed(m, base, root), body)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n")
