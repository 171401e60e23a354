"""The synthetic world's vocabulary: object colours and shapes, their names, the verbs and the templates.

Shared by the synthetic generator (cuelab.data.synthetic, which draws these objects and acts these templates)
and the tiny model's tokenizer corpus (cuelab.model.tiny, which must know the words), so the model does not
import the generator. Changing anything here changes the tiny tokenizer, and so the shipped demo checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

# Object colours avoid the cue palette's names (red, blue, green, yellow, magenta, cyan): a question
# "the object marked in red" must never have "red cube" as its answer.
COLORS: dict[str, tuple[int, int, int]] = {
    "orange": (245, 130, 20), "purple": (120, 50, 170), "brown": (125, 75, 35), "pink": (250, 150, 190),
    "white": (250, 250, 250), "black": (25, 25, 25),
}
SHAPES = ["cube", "ball", "triangle", "ring"]
OBJECT_NAMES = [f"{c} {s}" for c in COLORS for s in SHAPES]

IN_PLACE = ["lifting", "dropping", "spinning", "shaking", "poking", "squeezing"]
MANNERS = ["pushing", "pulling", "rolling", "moving"]
PATHS = {"left_right": "from left to right", "right_left": "from right to left",
         "closer": "closer to [something]", "away": "away from [something]"}
SINGLES = {"put_on": "Putting [something] on [something]", "drop_into": "Dropping [something] into [something]",
           "cover": "Covering [something] with [something]", "turn": "Turning [something] upside down"}


@dataclass(frozen=True)
class Template:
    key: str
    text: str
    verb: str  # in-place verb or manner
    path: str  # "in_place" | a PATHS key | a SINGLES key

    @property
    def slots(self) -> int:
        return self.text.count("[something]")


def all_templates() -> list[Template]:
    out = [Template(v, f"{v.capitalize()} [something]", v, "in_place") for v in IN_PLACE]
    for m in MANNERS:
        for p, words in PATHS.items():
            out.append(Template(f"{m}_{p}", f"{m.capitalize()} [something] {words}", m, p))
    out += [Template(k, t, t.split()[0].lower(), k) for k, t in SINGLES.items()]
    return out
