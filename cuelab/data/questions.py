"""Fill-in-the-blank multiple-choice questions from SSv2 labels, plus cue-referential ones from tracks.

Four kinds, each with one blank `_____` and four choices:
- object: one [something] slot is blanked ("Dropping _____ into small box."); distractors are object names
  that other videos typed into the same slot of the same template (so the sentence alone does not tell),
  drawn in proportion to how often they occur (so frequency alone does not tell either);
- verb: the verb phrase is blanked ("_____ comb into small box."); distractors are verb phrases of
  templates of the same shape (see `TemplateInfo`), again drawn in proportion to their frequency;
- referential: "The object marked in red is _____." in scenes with at least two annotated objects; the
  distractors are first the other objects of the same scene, so only the cue tells which one is meant.
  The colour words are the renderer's slot colours (cuelab.video.palette). "marked in red" rather than
  "in the red box": the cue may be a trail or a spotlight, and "box" is itself a common object name;
- referential_verb: "What is being done to the object marked in red? _____" in scenes where two or more objects
  are acted on in different ways at the same time, one question per acting object; the answer is its verb
  phrase, the first distractor the other actor's (following the wrong cue gives that specific wrong answer),
  the rest verb phrases of the same template shape, as for `verb`. Who does what comes from the synthetic
  dataset's side file `actions.json` beside the labels (video id -> {object id: verb phrase}, see
  cuelab.data.synthetic; a video it leaves out has one actor). SSv2 labels hold one action per video and real
  SSv2 has no such file, so without it the kind yields no question (each video counted under `actions_unknown`).

Every rule of a fair question (four distinct choices after normalisation, none inside another, the answer
not written in the question, balanced answer slots) is enforced here and counted again in the manifest.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm import tqdm

from cuelab.config import QuestionsConfig
from cuelab.data.frame_size import clip_to_frames
from cuelab.data.normalize import BLANK, clean_placeholder, contains, in_question, noise_reason, normalize, overlaps, words
from cuelab.data.something_else import load_annotations
from cuelab.data.split import N_CHOICES, place_answers, sanity_counts, sha256_bytes, split_videos, stable_int, summarize
from cuelab.data.ssv2 import LabelEntry, parse_label_entry
from cuelab.errors import DataError
from cuelab.fsutil import atomic_write_bytes, atomic_write_json, load_json
from cuelab.tracks import VideoTracks, object_slot
from cuelab.video.palette import slot_color_name

RECORD_KEYS = ("id", "video", "kind", "question", "choices", "answer", "answer_index", "template", "verb", "label",
               "target_object", "cue_colors", "hint", "split", "flags")
# the kinds draw from one generator per video in this order: a new kind goes last, so the others keep their questions
KINDS = ("object", "verb", "referential", "referential_verb", "scene_object")
ACTIONS_FILE = "actions.json"
SHAPE_LEVELS = ("exact", "frame", "lead")

_TOKEN = re.compile(r"\[[^\]]*\]|[^\s\[\],]+|,")
_ING = re.compile(r"[a-z]+ing")
# words ending in -ing that are not verbs
_NOT_VERBS = frozenset({"thing", "something", "nothing", "anything", "everything", "ring", "string", "spring",
                        "king", "during", "ceiling", "building", "clothing", "morning", "evening", "ping"})


# ------------------------------------------------------------------------------------------------------------
# Templates: the verb phrase and the shape around it
# ------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TemplateInfo:
    """A template split into tokens (words, commas, slots), with its verb phrase and shape.

    The verb is the first word ending in -ing outside the slots (the first study's rule); the verb phrase
    runs from it to the next slot, less a trailing "that": "Pretending to put [something] behind
    [something]" -> "pretending to put", "Showing that [something] is empty" -> "showing",
    "[Something] falling like a rock" -> "falling like a rock".

    The shape is the template lower-cased with the verb phrase replaced by {v} and every slot by [x]:
    ("{v}", "[x]", "behind", "[x]"). A verb phrase may stand in for another, and the question still reads,
    when their templates agree at one of three levels (tightest first):
    - exact: the same shape ("Pushing/Pulling [something] from left to right");
    - frame: the same words before the verb and the same two tokens after it ("{v} [x] with": covering,
      hitting, lifting ... [something] with [something]);
    - lead: the same words before the verb, the same one token after it (the verb takes the object directly,
      "{v} [x]"), and the same number of slots.
    """

    template: str
    tokens: tuple[str, ...]
    verb: str | None
    verb_span: tuple[int, int] | None
    shape: tuple[str, ...]
    n_slots: int
    n_verbs: int

    def key(self, level: str) -> tuple | None:
        if self.verb is None:
            return None
        k = self.shape.index("{v}")
        if level == "exact":
            return self.shape
        if level == "frame":
            return self.shape[:k + 3]
        if level == "lead":
            return self.shape[:k + 2] + (f"slots={self.n_slots}",)
        raise ValueError(f"unknown shape level {level!r}; known: {SHAPE_LEVELS}")

    def render(self, fills: list[str], blank: int | str | None = None) -> str:
        """The template with slots filled; `blank` = a slot index or "verb" is replaced by _____."""
        out: list[str] = []
        slot = 0
        span = self.verb_span if blank == "verb" else None
        for i, tok in enumerate(self.tokens):
            if span and span[0] <= i < span[1]:
                if i == span[0]:
                    out.append(BLANK)
                continue
            if tok.startswith("["):
                out.append(BLANK if blank == slot else fills[slot])
                slot += 1
            else:
                out.append(tok)
        text = " ".join(out).replace(" ,", ",")
        text = text[0].upper() + text[1:] if text and text[0].isalpha() else text
        return text if text.endswith((".", "?", "!")) else text + "."


def _is_verb(tok: str) -> bool:
    return not tok.startswith("[") and len(tok) >= 5 and tok.lower() not in _NOT_VERBS and bool(
        _ING.fullmatch(tok.lower()))


@lru_cache(maxsize=4096)
def parse_template(template: str) -> TemplateInfo:
    tokens = tuple(_TOKEN.findall(template))
    n_slots = sum(t.startswith("[") for t in tokens)
    verbs = [i for i, t in enumerate(tokens) if _is_verb(t)]
    low = tuple("[x]" if t.startswith("[") else t.lower() for t in tokens)
    if not verbs:
        return TemplateInfo(template, tokens, None, None, low, n_slots, 0)
    i = verbs[0]
    j = i + 1
    while j < len(tokens) and not tokens[j].startswith("["):
        j += 1
    while j - 1 > i and low[j - 1] in ("that", ","):
        j -= 1
    verb = " ".join(low[i:j])
    return TemplateInfo(template, tokens, verb, (i, j), low[:i] + ("{v}",) + low[j:], n_slots, len(verbs))


# ------------------------------------------------------------------------------------------------------------
# Vocabularies: object names and verb phrases, with how often each occurs
# ------------------------------------------------------------------------------------------------------------

class Pool:
    """Candidate strings with weights; `order(rng)` is a weighted random order (Efraimidis-Spirakis keys)."""

    def __init__(self, counts: Counter):
        items = sorted(counts.items())
        self.names = [k for k, _ in items]
        self.weights = np.array([float(v) for _, v in items])

    def __len__(self) -> int:
        return len(self.names)

    def order(self, rng: np.random.Generator):
        """Lazily: the order is drawn only when a first candidate is asked for (most questions never reach
        the large vocabulary pool)."""
        if not self.names:
            return
        keys = np.log(rng.random(len(self.names))) / self.weights
        for i in np.argsort(-keys, kind="stable"):
            yield self.names[i]


class ObjectVocab:
    """Object names typed into the labels (and categories from the tracks), merged by normalised key."""

    def __init__(self):
        self._forms: dict[str, Counter] = defaultdict(Counter)
        self._slot: dict[tuple[str, int], Counter] = defaultdict(Counter)

    def add(self, name: str, template: str | None = None, slot: int | None = None) -> None:
        key = normalize(name)
        if key:
            self._forms[key][name] += 1
            if template is not None:
                self._slot[(template, slot)][key] += 1

    def freeze(self) -> "ObjectVocab":
        # one shown form per key: the most common spelling, ties alphabetical
        self.display = {k: sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] for k, c in self._forms.items()}
        self.all = Pool(Counter({self.display[k]: sum(c.values()) for k, c in self._forms.items()}))
        self.by_slot = {ts: Pool(Counter({self.display[k]: n for k, n in c.items()})) for ts, c in self._slot.items()}
        return self


class VerbVocab:
    """Verb phrases grouped by shape level, weighted by how many labels use them."""

    def __init__(self, template_counts: Counter):
        self.groups: dict[str, dict[tuple, Counter]] = {lvl: defaultdict(Counter) for lvl in SHAPE_LEVELS}
        self._templates: dict[str, Counter] = defaultdict(Counter)
        for template, n in sorted(template_counts.items()):
            info = parse_template(template)
            if info.verb is None:
                continue
            self._templates[info.verb][template] += n
            for lvl in SHAPE_LEVELS:
                self.groups[lvl][info.key(lvl)][info.verb] += n

    def pools(self, info: TemplateInfo, loosest: str) -> list[tuple[str, Pool]]:
        """The candidate pools for a template's verb, tightest level first, up to `loosest`."""
        out, seen = [], {info.verb}
        for lvl in SHAPE_LEVELS[:SHAPE_LEVELS.index(loosest) + 1]:
            c = Counter({v: n for v, n in self.groups[lvl].get(info.key(lvl), {}).items() if v not in seen})
            seen.update(c)
            out.append((lvl, Pool(c)))
        return out

    def template_of(self, phrase: str) -> TemplateInfo | None:
        """The most used template whose verb phrase is `phrase` (ties alphabetical), or None if no label has it."""
        c = self._templates.get(phrase)
        return parse_template(sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]) if c else None

    def level(self, info: TemplateInfo, phrase: str) -> str | None:
        """The tightest level at which `phrase` may replace the template's verb, or None (a shape violation)."""
        for lvl in SHAPE_LEVELS:
            if phrase in self.groups[lvl].get(info.key(lvl), {}):
                return lvl
        return None


# ------------------------------------------------------------------------------------------------------------
# One video's questions
# ------------------------------------------------------------------------------------------------------------

def _pick(pools: list[tuple[str, Iterable[str]]], answer: str, question: str, banned: list[tuple[str, ...]],
          n: int = N_CHOICES - 1) -> list[tuple[str, str]]:
    """Up to n distractors (with the pool level each came from): none overlaps the answer, another pick or a
    banned name, and none is written in the question."""
    chosen: list[tuple[str, str]] = []
    if n <= 0:
        return chosen
    taken = [words(answer)] + list(banned)
    for level, candidates in pools:
        for cand in candidates:
            w = words(cand)
            if not w or any(overlaps(w, t) for t in taken) or in_question(question, w):
                continue
            chosen.append((cand, level))
            taken.append(w)
            if len(chosen) == n:
                return chosen
    return chosen


def _object_names(tracks: VideoTracks, names: list[str], max_chars: int) -> dict[str, str]:
    """Object id -> shown name: the tracks' category, else the label's placeholder for that slot."""
    out = {}
    for oid in tracks.objects():
        slot = object_slot(oid)
        if slot is None:
            continue
        cat = tracks.categories.get(oid)
        if cat is not None and noise_reason(cat, max_chars) is None:
            out[oid] = clean_placeholder(cat)
        elif slot < len(names):
            out[oid] = names[slot]
    return out


@dataclass
class UsableVideo:
    """A label entry kept for questions, with its cleaned placeholders (the object names of its slots)."""

    entry: LabelEntry
    names: list[str]


@dataclass
class Vocabularies:
    """The object names and verb phrases of the whole set, where distractors are drawn from."""

    objects: ObjectVocab
    verbs: VerbVocab


@dataclass
class Tally:
    """What a build left out and why (`drops`: per video, per placeholder, per question kind) and where the
    distractors came from (`sources`, per kind); both go to the manifest as they are (key order included)."""

    drops: dict[str, Counter]
    sources: dict[str, Counter]

    @classmethod
    def for_kinds(cls, kinds: list[str]) -> "Tally":
        return cls({"videos": Counter(), "placeholders": Counter(), **{k: Counter() for k in kinds}},
                   {k: Counter() for k in kinds})


@dataclass
class _Video:
    """What every question kind of one video reads: the label entry, its parsed template, its tracks, the
    vocabularies and the video's own generator (shared in KINDS order), what each acting object undergoes
    (`actions`: object id -> verb phrase; None where unknown), plus the counters of what was left out (`drops`)
    and where distractors came from (`sources`)."""

    entry: LabelEntry
    names: list[str]
    tracks: VideoTracks | None
    info: TemplateInfo
    rng: np.random.Generator
    colors: dict[str, str]
    video_names: list[tuple[str, ...]]
    objects: ObjectVocab
    verbs: VerbVocab
    cfg: QuestionsConfig
    drops: dict[str, Counter]
    sources: dict[str, Counter]
    actions: dict[str, str] | None = None

    def record(self, kind: str, k: int, question: str, answer: str, picked: list[tuple[str, str]],
               target: str | None, hint: str) -> dict:
        """The question record (answer first in `choices`), counting where its distractors came from."""
        self.sources[kind].update(lvl for _, lvl in picked)
        rec = {"id": f"{self.entry.id}-{kind}-{k}", "video": self.entry.id, "kind": kind, "question": question,
               "choices": [answer] + [p for p, _ in picked], "answer": answer, "answer_index": 0,
               "template": self.entry.template, "verb": self.info.verb or "", "label": self.entry.label,
               "target_object": target, "cue_colors": self.colors, "hint": hint, "split": "", "flags": []}
        assert tuple(rec) == RECORD_KEYS
        return rec


def _object_questions(v: _Video) -> list[dict]:
    """One question per [something] slot: the slot blanked, distractors typed into the same template slot."""
    rows = []
    if v.info.n_slots == 0:
        v.drops["object"]["no_slot"] += 1
    for s, answer in enumerate(v.names):
        question = v.info.render(v.names, blank=s)
        if in_question(question, answer):
            v.drops["object"]["answer_in_question"] += 1
            continue
        pools = [("template_slot", v.objects.by_slot[(v.entry.template, s)].order(v.rng)),
                 ("vocabulary", v.objects.all.order(v.rng))]
        picked = _pick(pools, answer, question, banned=v.video_names)
        if len(picked) < N_CHOICES - 1:
            v.drops["object"]["too_few_distractors"] += 1
            continue
        target = str(s) if str(s) in v.colors else None
        hint = f"The object marked in {v.colors[target]} is the one in the blank." if target else ""
        rows.append(v.record("object", s, question, answer, picked, target, hint))
    return rows


def _verb_questions(v: _Video) -> list[dict]:
    """The verb phrase blanked; distractors are verb phrases of templates of the same shape."""
    if v.info.verb is None:
        v.drops["verb"]["no_verb"] += 1
        return []
    question = v.info.render(v.names, blank="verb")
    if in_question(question, v.info.verb):
        v.drops["verb"]["answer_in_question"] += 1
        return []
    pools = [(lvl, pool.order(v.rng)) for lvl, pool in v.verbs.pools(v.info, v.cfg.verb_shape)]
    picked = _pick(pools, v.info.verb, question, banned=[])
    if len(picked) < N_CHOICES - 1:
        v.drops["verb"]["too_few_same_shape_verbs"] += 1
        return []
    target = "0" if "0" in v.colors else None
    hint = f"The object marked in {v.colors[target]} is the one acted on." if target else ""
    return [v.record("verb", 0, question, v.info.verb, picked, target, hint)]


def _referential_questions(v: _Video) -> list[dict]:
    """"The object marked in <colour> is _____." for each named object of a scene with two or more."""
    if v.tracks is None:
        return []
    named = _object_names(v.tracks, v.names, v.cfg.max_placeholder_chars)
    if len(v.tracks.objects()) < 2:
        v.drops["referential"]["fewer_than_two_objects"] += 1
        return []
    scene = [words(n) for n in named.values()] + v.video_names
    rows = []
    for oid in v.tracks.objects():
        row = _referential_question(v, oid, named, scene)
        if row is not None:
            rows.append(row)
    return rows


def _referential_question(v: _Video, oid: str, named: dict[str, str], scene: list[tuple[str, ...]]) -> dict | None:
    """The referential question of one object, or None (counted in `drops`): other objects of the scene first
    as distractors, so only the cue tells which one is meant; then the vocabulary."""
    if oid not in named:
        v.drops["referential"]["no_name"] += 1
        return None
    answer, color = named[oid], v.colors[oid]
    if contains(answer, color):  # "the object marked in red" -> "red cube" would give it away
        v.drops["referential"]["cue_colour_in_answer"] += 1
        return None
    others = [named[o] for o in sorted(named, key=int) if o != oid and not contains(named[o], color)]
    others = [others[i] for i in v.rng.permutation(len(others))]
    question = f"The object marked in {color} is {BLANK}."
    in_scene = _pick([("scene", others)], answer, question, banned=[(color,)])
    if not in_scene:
        v.drops["referential"]["no_other_object_name"] += 1
        return None
    rest = _pick([("vocabulary", v.objects.all.order(v.rng))], answer, question,
                 banned=[(color,)] + scene + [words(p) for p, _ in in_scene], n=N_CHOICES - 1 - len(in_scene))
    picked = in_scene + rest
    if len(picked) < N_CHOICES - 1:
        v.drops["referential"]["too_few_distractors"] += 1
        return None
    hint = f"Each object is marked in its own colour; the question asks about the one marked in {color}."
    return v.record("referential", int(oid), question, answer, picked, oid, hint)


def _referential_verb_questions(v: _Video) -> list[dict]:
    """"What is being done to the object marked in <colour>? _____" for each acting object of a scene where
    two or more objects are acted on in different ways (known only from `actions`)."""
    drops = v.drops["referential_verb"]
    if v.actions is None:
        drops["actions_unknown"] += 1
        return []
    if v.tracks is None:
        drops["no_boxes"] += 1
        return []
    acting = {o: a for o, a in sorted(v.actions.items(), key=lambda kv: int(kv[0])) if o in v.colors}
    if len(acting) < 2:
        drops["fewer_than_two_actors"] += 1
        return []
    if len({normalize(a) for a in acting.values()}) < len(acting):
        drops["same_action"] += 1
        return []
    rows = []
    for oid in acting:
        row = _referential_verb_question(v, oid, acting)
        if row is not None:
            rows.append(row)
    return rows


def _referential_verb_question(v: _Video, oid: str, acting: dict[str, str]) -> dict | None:
    """The question about one acting object, or None (counted in `drops`): the other actors' verbs first, then
    verb phrases of the same template shape as the answer's (its own template for the labelled action, else
    the most used template with that verb)."""
    drops = v.drops["referential_verb"]
    answer, color = acting[oid], v.colors[oid]
    question = f"What is being done to the object marked in {color}? {BLANK}"
    if in_question(question, answer):
        drops["answer_in_question"] += 1
        return None
    others = [a for o, a in acting.items() if o != oid]
    others = [others[i] for i in v.rng.permutation(len(others))]
    in_scene = _pick([("scene", others)], answer, question, banned=[])
    if not in_scene:
        drops["no_other_action"] += 1
        return None
    info = v.info if v.info.verb == answer else v.verbs.template_of(answer)
    pools = [(lvl, pool.order(v.rng)) for lvl, pool in v.verbs.pools(info, v.cfg.verb_shape)] if info else []
    rest = _pick(pools, answer, question, banned=[words(p) for p, _ in in_scene], n=N_CHOICES - 1 - len(in_scene))
    picked = in_scene + rest
    if len(picked) < N_CHOICES - 1:
        drops["too_few_same_shape_verbs"] += 1
        return None
    hint = f"Each object is marked in its own colour; the question asks about the one marked in {color}."
    return v.record("referential_verb", int(oid), question, answer, picked, oid, hint)


def _scene_object_questions(v: _Video) -> list[dict]:
    """"One of the objects in the video is _____." for each named object of the scene, still ones included
    (the label names only the acted-on ones); the distractors name no object of the scene, so a plain video
    answers it. Referential questions need a model that can name every object it sees: one pretrained on the
    label's objects alone names the mover whatever colour is asked (docs/demo-research.md)."""
    if v.tracks is None:
        return []
    named = _object_names(v.tracks, v.names, v.cfg.max_placeholder_chars)
    scene = [words(n) for n in named.values()] + v.video_names
    question = f"One of the objects in the video is {BLANK}."
    rows = []
    for oid in sorted(named, key=int):
        picked = _pick([("vocabulary", v.objects.all.order(v.rng))], named[oid], question, banned=scene)
        if len(picked) < N_CHOICES - 1:
            v.drops["scene_object"]["too_few_distractors"] += 1
            continue
        rows.append(v.record("scene_object", int(oid), question, named[oid], picked, oid, ""))
    return rows


_KIND_QUESTIONS = {"object": _object_questions, "verb": _verb_questions, "referential": _referential_questions,
                   "referential_verb": _referential_verb_questions, "scene_object": _scene_object_questions}


def video_questions(video: UsableVideo, tracks: VideoTracks | None, vocab: Vocabularies, cfg: QuestionsConfig,
                    tally: Tally, actions: dict[str, str] | None = None) -> list[dict]:
    """All questions of one video (answers first in `choices`; `place_answers` moves them later), one function
    per kind, in KINDS order: the kinds draw from one generator seeded per video, so the order is part of the
    output. `tally` counts what was left out and why, and where the distractors came from, per kind; `actions`
    is what each acting object undergoes (object id -> verb phrase; None: unknown)."""
    entry, names = video.entry, video.names
    colors = {o: slot_color_name(object_slot(o)) for o in tracks.objects() if object_slot(o) is not None} \
        if tracks is not None else {}
    v = _Video(entry=entry, names=names, tracks=tracks, info=parse_template(entry.template),
               rng=np.random.default_rng([cfg.seed, stable_int("video", entry.id)]), colors=colors,
               video_names=[words(n) for n in names], objects=vocab.objects, verbs=vocab.verbs, cfg=cfg,
               drops=tally.drops, sources=tally.sources, actions=actions)
    rows: list[dict] = []
    for kind in KINDS:
        if kind in cfg.kinds:
            rows += _KIND_QUESTIONS[kind](v)
    return rows


# ------------------------------------------------------------------------------------------------------------
# The whole set
# ------------------------------------------------------------------------------------------------------------

def _why_unusable(entry: LabelEntry, cfg: QuestionsConfig, placeholder_drops: Counter) -> str | None:
    """Why a label entry is left out (counting each noisy placeholder in `placeholder_drops`), or None."""
    info = parse_template(entry.template)
    if len(entry.placeholders) != info.n_slots:
        return "placeholder_count_mismatch"
    reasons = [noise_reason(p, cfg.max_placeholder_chars) for p in entry.placeholders]
    for r in reasons:
        if r:
            placeholder_drops[r] += 1
    if any(reasons):
        return "noisy_placeholder"
    if cfg.single_verb_templates and info.n_verbs != 1:
        return "not_single_verb_template"
    return None


def _usable_videos(labels: list[LabelEntry], cfg: QuestionsConfig, drops: dict[str, Counter]) -> list[UsableVideo]:
    """The label entries questions may be asked about (the first of each id), with cleaned placeholders."""
    usable: list[UsableVideo] = []
    seen: set[str] = set()
    for entry in labels:
        if entry.id in seen:
            drops["videos"]["duplicate_id"] += 1
            continue
        seen.add(entry.id)
        why = _why_unusable(entry, cfg, drops["placeholders"])
        if why:
            drops["videos"][why] += 1
        else:
            usable.append(UsableVideo(entry, [clean_placeholder(p) for p in entry.placeholders]))
    return usable


def _vocabularies(usable: list[UsableVideo], annotations: dict[str, VideoTracks] | None,
                  cfg: QuestionsConfig) -> Vocabularies:
    """Object names from the usable labels' slots and the tracks' clean categories; verb phrases from the
    usable labels' templates, weighted by how many labels use each."""
    objects = ObjectVocab()
    for u in usable:
        for s, n in enumerate(u.names):
            objects.add(n, u.entry.template, s)
    for tracks in (annotations or {}).values():
        for oid in tracks.objects():
            cat = tracks.categories.get(oid)
            if cat is not None and noise_reason(cat, cfg.max_placeholder_chars) is None:
                objects.add(clean_placeholder(cat))
    return Vocabularies(objects.freeze(), VerbVocab(Counter(u.entry.template for u in usable)))


def _questions_by_video(usable: list[UsableVideo], annotations: dict[str, VideoTracks] | None, vocab: Vocabularies,
                        cfg: QuestionsConfig, tally: Tally,
                        actions: dict[str, dict[str, str]] | None) -> dict[str, list[dict]]:
    """Video id -> its questions, in label order, for every usable video that yields at least one."""
    by_video: dict[str, list[dict]] = {}
    for u in tqdm(usable, desc="questions", unit="video", mininterval=2, leave=False):
        tracks = annotations.get(u.entry.id) if annotations is not None else None
        if annotations is not None and cfg.require_boxes and tracks is None:
            tally.drops["videos"]["no_boxes"] += 1
            continue
        # the side file lists the videos with two or more actors: one it leaves out has a single actor
        acts = actions.get(u.entry.id, {}) if actions is not None else None
        rows = video_questions(u, tracks, vocab, cfg, tally, acts)
        if not rows:
            tally.drops["videos"]["no_questions"] += 1
            continue
        by_video[u.entry.id] = rows
    if not by_video:
        raise DataError(f"no video yielded a question (left out: {dict(tally.drops['videos'])})", field="labels")
    return by_video


@dataclass
class _Split:
    """The selected videos split into train and test (ids in label order), with their questions."""

    train_ids: list[str]
    test_ids: list[str]
    train: list[dict]
    test: list[dict]


def _split(by_video: dict[str, list[dict]], cfg: QuestionsConfig) -> _Split:
    """Draw the videos (stratified by template), mark each row's split and place the answers."""
    # every row of a video has that video's template
    strata = {vid: rows[0]["template"] for vid, rows in by_video.items()}
    train_ids, test_ids = split_videos(strata, cfg.videos, cfg.test_videos, cfg.seed)
    train = [r for v in train_ids for r in by_video[v]]
    test = [r for v in test_ids for r in by_video[v]]
    for r in train:
        r["split"] = "train"
    for r in test:
        r["split"] = "test"
    place_answers(train + test, cfg.seed)
    return _Split(train_ids, test_ids, train, test)


def _verb_shape_violations(rows: list[dict], verbs: VerbVocab) -> int:
    """Verb distractors whose template shape does not match the question's at any level (0 when correct)."""
    return sum(verbs.level(parse_template(r["template"]), c) is None
               for r in rows if r["kind"] == "verb" for c in r["choices"] if c != r["answer"])


def _manifest(cfg: QuestionsConfig, videos: dict[str, int], split: _Split, tally: Tally, verbs: VerbVocab) -> dict:
    """The manifest without file hashes; `videos` counts the labels, usable and with-question videos."""
    rows = split.train + split.test
    return {
        "config": cfg.model_dump(mode="json"),
        "videos": {**videos, "selected": len(split.train_ids) + len(split.test_ids), "train": len(split.train_ids),
                   "test": len(split.test_ids)},
        **{k: v for k, v in summarize(split.train, split.test).items() if k != "videos"},
        "dropped": {k: dict(sorted(v.items())) for k, v in tally.drops.items()},
        "distractor_sources": {k: dict(sorted(v.items())) for k, v in tally.sources.items()},
        "sanity": {**sanity_counts(rows), "verb_shape_violations": _verb_shape_violations(rows, verbs),
                   "test_videos_in_train": len(set(split.test_ids) & {r["video"] for r in split.train})},
    }


def build_questions(labels: list[LabelEntry], annotations: dict[str, VideoTracks] | None, cfg: QuestionsConfig,
                    actions: dict[str, dict[str, str]] | None = None) -> tuple[list[dict], list[dict], dict]:
    """Questions for the labelled videos, split by video: (train rows, test rows, manifest without hashes).

    Videos: every label entry whose placeholders are clean (and, with annotations and require_boxes, that has
    tracks). `cfg.videos` of them are drawn (stratified by template), `cfg.test_videos` of those go to test.
    `actions` (video id -> {object id: verb phrase}, see `read_actions`) feeds the referential_verb kind."""
    tally = Tally.for_kinds([k for k in cfg.kinds if k in KINDS])
    usable = _usable_videos(labels, cfg, tally.drops)
    vocab = _vocabularies(usable, annotations, cfg)
    by_video = _questions_by_video(usable, annotations, vocab, cfg, tally, actions)
    split = _split(by_video, cfg)
    videos = {"labels": len(labels), "usable": len(usable), "with_questions": len(by_video)}
    manifest = _manifest(cfg, videos, split, tally, vocab.verbs)
    broken = {k: v for k, v in manifest["sanity"].items() if v}
    if broken:  # a bug here, not bad input: never write a set that breaks its own rules
        raise RuntimeError(f"question builder broke its own rules: {broken}")
    return split.train, split.test, manifest


def read_inputs(labels_path: str | Path, annotations_path: str | Path | None = None,
                videos_dir: str | Path | None = None) -> tuple[list[LabelEntry], dict[str, VideoTracks] | None, dict]:
    """Labels (+ annotations) for `build_questions`; a bad entry or video is reported and skipped, not fatal.
    With `videos_dir`, the boxes of the labelled videos are clipped to their frames (see cuelab.data.frame_size):
    an object wholly outside the frame gets no referential question and no hint.
    Returns (labels, annotations or None, a report for the manifest)."""
    labels_path = Path(labels_path)
    data = load_json(labels_path)
    if not isinstance(data, list):
        raise DataError(f"expected a JSON list of label entries, got {type(data).__name__}", file=str(labels_path))
    labels, errors = [], []
    for i, raw in enumerate(data):
        try:
            labels.append(parse_label_entry(raw, file=str(labels_path), index=i))
        except DataError as e:
            errors.append(e.as_record())
    report = {"labels": str(labels_path), "label_errors": len(errors), "annotations": None,
              "annotation_errors": 0, "errors": errors[:50]}
    annotations = None
    if annotations_path is not None:
        aset = load_annotations(annotations_path, strict=False)
        annotations = aset.videos
        report["annotations"] = str(annotations_path)
        report["annotation_errors"] = len(aset.errors)
        report["errors"] += [e.as_record() for e in aset.errors[:50]]
        if videos_dir is not None:
            annotations, report["frames"] = clip_to_frames(annotations, videos_dir, {e.id for e in labels})
    return labels, annotations, report


def read_actions(labels_path: str | Path) -> dict[str, dict[str, str]] | None:
    """The synthetic dataset's `actions.json` beside `labels_path` (video id -> {object id: verb phrase}), or None
    when there is none (real SSv2). Checked: a malformed entry raises DataError naming the file, the video id
    and the field (the object id)."""
    path = Path(labels_path).parent / ACTIONS_FILE
    if not path.is_file():
        return None
    data = load_json(path)
    if not isinstance(data, dict):
        raise DataError(f"expected a JSON object of video id -> actions, got {type(data).__name__}", file=str(path))
    out: dict[str, dict[str, str]] = {}
    for vid, acts in data.items():
        if not isinstance(acts, dict) or not acts:
            raise DataError(f"expected a non-empty object of object id -> verb phrase, got {acts!r}",
                            file=str(path), video_id=vid, field="actions")
        for oid, phrase in acts.items():
            if not oid.isdigit():
                raise DataError(f"object ids are slot numbers ('0', '1', ...), got {oid!r}", file=str(path),
                                video_id=vid, field=oid)
            if not isinstance(phrase, str) or not normalize(phrase):
                raise DataError(f"expected a verb phrase, got {phrase!r}", file=str(path), video_id=vid, field=oid)
        out[str(vid)] = {oid: phrase.strip().lower() for oid, phrase in acts.items()}
    return out


def _jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps({k: r[k] for k in RECORD_KEYS}, ensure_ascii=False) + "\n" for r in rows).encode()


def write_questions(out_dir: str | Path, train: list[dict], test: list[dict], manifest: dict) -> dict:
    """Write train.jsonl, test.jsonl and manifest.json (with the files' sha256) atomically; returns the manifest."""
    out = Path(out_dir)
    files = {}
    for name, rows in (("train.jsonl", train), ("test.jsonl", test)):
        data = _jsonl_bytes(rows)
        atomic_write_bytes(out / name, data)
        files[name] = sha256_bytes(data)
    manifest = {**manifest, "files": files}
    atomic_write_json(out / "manifest.json", manifest)
    return manifest
