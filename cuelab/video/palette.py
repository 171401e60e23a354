"""One fixed, named cue colour per object slot. The referential questions use these names, so a question
"the object in the red box" always means the object the renderer drew in red."""

from __future__ import annotations

# (name, RGB); slot k = object k of the annotations ("object 0" -> red, "object 1" -> blue, ...)
SLOT_COLORS: list[tuple[str, tuple[int, int, int]]] = [
    ("red", (230, 25, 25)),
    ("blue", (30, 90, 255)),
    ("green", (20, 200, 60)),
    ("yellow", (255, 220, 0)),
    ("magenta", (230, 40, 230)),
    ("cyan", (0, 220, 230)),
]
HAND_COLOR: tuple[str, tuple[int, int, int]] = ("white", (255, 255, 255))


def slot_color(slot: int) -> tuple[int, int, int]:
    return SLOT_COLORS[slot % len(SLOT_COLORS)][1]


def slot_color_name(slot: int) -> str:
    return SLOT_COLORS[slot % len(SLOT_COLORS)][0]
