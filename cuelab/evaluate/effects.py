"""When do cues help, does the model follow them, and what could this run detect: measures on prediction files
beside what the questions and the tracks say about each question. No torch (the report and `cuelab results`
read it).

- **Facts** (`QuestionFacts`, one per test question, from questions/test.jsonl, the annotations and the source
  videos' frame sizes): the asked object (`target_object`), the scene's object count (`Question.n_objects`), the
  asked object's mean box area share of the frame, the choices that name things of the scene, and the object the
  `wrong_object` control draws in the colour the ordinary cue gives the asked object ("the object marked in
  red" for a question about object 0) with the choice that names it. Object names come from the questions
  themselves (the answer of a referential or object question names its `target_object`) and from the tracks'
  categories, compared after cuelab's normalisation (case, articles, plurals, spaces).
- **Follow rate** under `wrong_object`: among the answers to questions where the marked object's name is one
  of the choices (and not the answer), the share picking it (Wilson CI, as accuracy), beside the share picking
  the same choice on the plain video (the paired difference with a CI clustered by video): does the model
  follow the cue? The denominator is given with the number of answers, since object and verb questions often
  have no choice naming the marked object.
- **Referential accuracy** per condition against the within-scene chance: the mean over the questions of
  1 / (choices naming things of the scene) -- what a model that knows the scene but cannot read the cue gets,
  which is where `plain` should sit (plain is the unanswerable control).
- **Cue effect by object size** (box area share bins) and **by object count**: per bin, n, plain and cued
  accuracy, paired difference with its clustered CI and its minimum detectable effect.
- **Verdicts**: per model and cue, "helps" / "hurts" when the clustered 95% CI of cue - plain excludes 0, else
  "no detectable effect" with the minimum detectable effect (cuelab.evaluate.metrics.mde_mcnemar); "not
  measured" with the reason when there is no plain arm, no shared question or too few videos for a CI.
- **The first study**: was its 1.6-point fine-tuned plain-vs-cued difference on ~2,500 questions detectable?
  The study published no paired counts, so the discordance is taken at its smallest, independent and largest
  values the two accuracies allow.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cuelab.errors import DataError
from cuelab.evaluate.metrics import (ALL, ALPHA, POWER, mcnemar_pairs, mcnemar_power, mde_mcnemar, paired,
                                     wilson)

PLAIN, BLIND, WRONG_OBJECT = "plain", "blind", "wrong_object"
SIZE_EDGES = (0.02, 0.05, 0.15)
SIZE_BINS = ("<2%", "2-5%", "5-15%", ">=15%")
NO_BOX, UNKNOWN = "no box", "unknown"
HELPS, HURTS, NO_EFFECT, NOT_MEASURED = "helps", "hurts", "no detectable effect", "not measured"
# The first study (../shared/notes/first-study-protocol.md): fine-tuned Qwen3-VL 2B, overall accuracy on plain
# and cued test videos, ~2.5 questions on each of its 1,000 test videos.
FIRST_STUDY_PLAIN, FIRST_STUDY_CUED, FIRST_STUDY_N = 0.9729, 0.9565, 2500


@dataclass(frozen=True)
class QuestionFacts:
    """What the measures need to know about one question beyond its prediction line."""

    question_id: str
    video: str
    kind: str | None
    n_choices: int
    answer_index: int | None
    asked_object: str | None = None
    n_objects: int | None = None
    box_share: float | None = None  # mean area share of the frame of the asked object's boxes
    marked_object: str | None = None  # the object wrong_object draws in the asked object's cue colour
    marked_index: int | None = None  # the choice naming it (None: no choice does, or it is the answer)
    scene_choices: int | None = None  # choices naming things of the scene (within-scene chance = 1 / this)


# --- facts from the questions, the tracks and the frame sizes -------------------------------------------------

def _norm(text: str) -> str:
    from cuelab.data.normalize import normalize

    return normalize(text)


def object_names(questions: list, tracks=None) -> dict[str, set[str]]:
    """Object id -> normalised names, from the answers of a video's referential and object questions (each names
    its `target_object`) and the tracks' categories."""
    names: dict[str, set[str]] = defaultdict(set)
    for q in questions:
        if q.kind in ("referential", "object") and q.target_object is not None and q.answer_index is not None:
            names[q.target_object].add(_norm(q.choices[q.answer_index]))
    for oid, cat in (tracks.categories.items() if tracks is not None else ()):
        names[oid].add(_norm(cat))
    return dict(names)


def box_share(tracks, object_id: str | None, size: tuple[int, int] | None) -> float | None:
    """Mean over the object's annotated frames of its box area (clipped to the frame) over the frame area."""
    if tracks is None or size is None or object_id not in tracks.tracks or not tracks.tracks[object_id]:
        return None
    w, h = size
    b = np.array(list(tracks.tracks[object_id].values()), np.float64).reshape(-1, 4)
    b = np.clip(b, 0, [w, h, w, h])
    return float(((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).mean() / (w * h))


def marked_object(cue, tracks, asked: str | None, size: tuple[int, int] | None) -> str | None:
    """The object `cue` (the run's wrong_object) draws in the colour the ordinary cue gives `asked`, when it is
    another object (None for a decoy box on no object, or no such mark)."""
    from cuelab.video.cues import object_color

    if tracks is None or size is None or asked is None or not asked.isdigit():
        return None
    colour = object_color(asked, int(asked))
    for mark in cue.layout(tracks, *size).marks:
        if mark.color == colour and mark.object_id != asked and mark.object_id in tracks.tracks:
            return mark.object_id
    return None


def _choice_naming(q, names: set[str]) -> int | None:
    """The first choice among `names` (normalised), unless it is the answer."""
    for i, c in enumerate(q.choices):
        if _norm(c) in names:
            return None if i == q.answer_index else i
    return None


def _scene_set(q, questions: list, names: dict[str, set[str]]) -> set[str]:
    """What the choices of `q` may name in its scene: the scene's objects for `referential`, else the answers of
    the video's questions of the same kind (the motions of a `referential_verb` scene); none for other kinds."""
    if q.kind == "referential":
        return set().union(*names.values()) if names else set()
    if not (q.kind or "").startswith("referential"):  # object and verb choices come from the whole vocabulary
        return set()
    return {_norm(o.choices[o.answer_index]) for o in questions if o.kind == q.kind and o.answer_index is not None}


def video_facts(questions: list, tracks, size: tuple[int, int] | None, cue) -> list[QuestionFacts]:
    """The facts of one video's questions (cuelab.question.Question; unusable ones are left out)."""
    names = object_names(questions, tracks)
    # what each object does, for referential_verb questions: following the cue means naming the marked one's verb
    actions = {q.target_object: {_norm(q.choices[q.answer_index])} for q in questions
               if q.kind == "referential_verb" and q.target_object is not None and q.answer_index is not None}
    out = []
    for q in questions:
        if q.problem is not None:
            continue
        asked = q.target_object
        marked = marked_object(cue, tracks, asked, size)
        scene = _scene_set(q, questions, names)
        k = sum(_norm(c) in scene for c in q.choices)
        lookup = actions if q.kind == "referential_verb" else names
        out.append(QuestionFacts(str(q.id), str(q.video), q.kind, len(q.choices), q.answer_index, asked,
                                 q.n_objects, box_share(tracks, asked, size), marked,
                                 _choice_naming(q, lookup.get(marked, set())) if marked else None, k or None))
    return out


@dataclass(frozen=True)
class FactSources:
    """Where the facts come from: the test questions, the annotations (None: no boxes) and the source videos
    (for frame sizes), and the run's wrong_object cue (None: not measured)."""

    questions: Path
    annotations: Path | None
    videos: Path | None
    cue: object | None


def question_facts(src: FactSources) -> list[QuestionFacts]:
    """Facts of every usable test question. A video whose size cannot be read, or whose boxes do not load, gets
    facts without size, share or marked object (never fatal)."""
    from cuelab.question import load_questions

    questions = load_questions(src.questions, strict=False)
    tracks: dict = {}
    if src.annotations is not None and Path(src.annotations).is_file():
        from cuelab.data.something_else import load_annotations

        tracks = load_annotations(src.annotations, strict=False).videos
    by_video = defaultdict(list)
    for q in questions:
        by_video[str(q.video)].append(q)
    out = []
    for vid, qs in by_video.items():
        out += video_facts(qs, tracks.get(vid), _frame_size(src.videos, vid), src.cue)
    return out


def _frame_size(videos: Path | None, video_id: str) -> tuple[int, int] | None:
    from cuelab.data.frame_size import frame_size

    if videos is None:
        return None
    try:
        return frame_size(videos, video_id)
    except DataError:
        return None


def run_sources(root: str | Path) -> FactSources | None:
    """The fact sources of a run folder (config.yaml and questions/test.jsonl), or None when `root` is not one."""
    from cuelab.config import load_config
    from cuelab.run_layout import RunPaths, dataset_files
    from cuelab.video.settings import RenderSettings

    paths = RunPaths(Path(root))
    test = paths.questions / "test.jsonl"
    if not (paths.root / "config.yaml").is_file() or not test.is_file():
        return None
    cfg = load_config(paths.root / "config.yaml", [f"output_dir={paths.root}"])
    _, annotations, videos = dataset_files(cfg, paths)
    cue = RenderSettings.from_config(cfg.render, cfg.seed).cue(WRONG_OBJECT)
    return FactSources(test, Path(annotations) if annotations else None, Path(videos) if videos else None, cue)


def facts_frame(facts: list[QuestionFacts]) -> pd.DataFrame:
    cols = [f for f in QuestionFacts.__dataclass_fields__]
    return pd.DataFrame([asdict(f) for f in facts], columns=cols)


def _with_facts(df: pd.DataFrame, facts: list[QuestionFacts]) -> pd.DataFrame:
    """Scored (not failed) prediction rows joined with their question's facts (by question id as text)."""
    f = facts_frame(facts).drop(columns=["video", "kind"])
    ok = df[~df["failed"]].assign(question_id=lambda d: d["question_id"].astype(str))
    return ok.merge(f, on="question_id", how="inner")


# --- follow rate under wrong_object -----------------------------------------------------------------------------

@dataclass(frozen=True)
class FollowRate:
    """Under `condition` (wrong_object), of `answers` scored answers of `kind`, `eligible` have a choice naming
    the marked object; `follows` of those pick it. `plain_*`: the same choice picked on the plain video."""

    model: str
    condition: str
    kind: str
    answers: int
    eligible: int
    follows: int
    rate: float
    ci_low: float
    ci_high: float
    asked: int  # eligible answers naming the asked object (correct)
    chance: float  # mean 1 / number of choices over the eligible questions
    plain_rate: float
    diff_vs_plain: float
    diff_ci_low: float
    diff_ci_high: float


def _picks(rows: pd.DataFrame, col: str) -> pd.DataFrame:
    return rows.assign(correct=(rows["choice_index"] == rows[col]).astype(int))[["question_id", "correct", "video"]]


def follow_rates(df: pd.DataFrame, facts: list[QuestionFacts], condition: str = WRONG_OBJECT) -> list[FollowRate]:
    """Follow rate of every model scored under `condition`, per kind and over all kinds."""
    rows = _with_facts(df, facts)
    out = []
    cued_all = rows[rows["condition"] == condition]
    for model in model_order(cued_all["model"]):
        cued = cued_all[cued_all["model"] == model]
        plain = rows[(rows["condition"] == PLAIN) & (rows["model"] == model)]
        for kind in [ALL] + sorted(set(cued["kind"].dropna())):
            sel = cued if kind == ALL else cued[cued["kind"] == kind]
            el = sel[sel["marked_index"].notna()]
            follows = int((el["choice_index"] == el["marked_index"]).sum())
            lo, hi = wilson(follows, len(el))
            base = plain[plain["question_id"].isin(el["question_id"])]
            cmp = paired(_picks(el, "marked_index"), _picks(base, "marked_index")) if len(base) else None
            out.append(FollowRate(
                model, condition, kind, len(sel), len(el), follows, follows / len(el) if len(el) else math.nan,
                lo, hi, int((el["choice_index"] == el["answer_index"]).sum()),
                float((1 / el["n_choices"]).mean()) if len(el) else math.nan,
                cmp["acc_b"] if cmp else math.nan, cmp["diff"] if cmp else math.nan,
                cmp["ci_low"] if cmp else math.nan, cmp["ci_high"] if cmp else math.nan))
    return out


# --- referential accuracy against within-scene chance ------------------------------------------------------------

@dataclass(frozen=True)
class ReferentialAccuracy:
    """Accuracy on one referential kind under one condition, the within-scene chance of the same questions and
    the paired difference from plain (NaN on the plain row itself)."""

    model: str
    condition: str
    kind: str
    n: int
    accuracy: float
    ci_low: float
    ci_high: float
    chance: float
    diff_vs_plain: float
    diff_ci_low: float
    diff_ci_high: float


def referential_accuracy(df: pd.DataFrame, facts: list[QuestionFacts]) -> list[ReferentialAccuracy]:
    """Every (model, condition, referential kind): accuracy [Wilson], within-scene chance, paired diff vs plain."""
    rows = _with_facts(df, facts)
    rows = rows[rows["kind"].fillna("").str.startswith("referential")]
    out = []
    groups = rows.groupby(["model", "condition", "kind"], sort=True)
    for (model, cond, kind), g in sorted(groups, key=lambda x: (model_order(rows["model"]).index(x[0][0]), x[0][1:])):
        n, correct = len(g), int(g["correct"].sum())
        lo, hi = wilson(correct, n)
        plain = rows[(rows["model"] == model) & (rows["condition"] == PLAIN) & (rows["kind"] == kind)]
        cmp = paired(g[["question_id", "correct", "video"]], plain[["question_id", "correct", "video"]]) \
            if cond != PLAIN and len(plain) else None
        out.append(ReferentialAccuracy(model, cond, kind, n, correct / n, lo, hi,
                                       float((1 / g["scene_choices"]).mean()),
                                       cmp["diff"] if cmp else math.nan, cmp["ci_low"] if cmp else math.nan,
                                       cmp["ci_high"] if cmp else math.nan))
    return out


# --- cue effect by object size and by object count --------------------------------------------------------------

def size_bin(share: float | None) -> str:
    """The asked object's box area share -> its bin (<2%, 2-5%, 5-15%, >=15%; `no box` when it has none)."""
    if share is None or (isinstance(share, float) and math.isnan(share)):
        return NO_BOX
    return SIZE_BINS[int(np.searchsorted(SIZE_EDGES, share, side="right"))]


def objects_bin(n: float | None) -> str:
    return UNKNOWN if n is None or (isinstance(n, float) and math.isnan(n)) else str(int(n))


@dataclass(frozen=True)
class BinEffect:
    """Cue vs plain on the questions of one bin (paired on the questions scored in both)."""

    model: str
    condition: str
    by: str  # "object size" or "objects in the scene"
    bin: str
    n: int
    plain_accuracy: float
    cued_accuracy: float
    diff: float
    ci_low: float
    ci_high: float
    mde: float
    discordance: float


BINNERS = {"object size": ("box_share", size_bin), "objects in the scene": ("n_objects", objects_bin)}


def _bin_order(by: str, bins: set[str]) -> list[str]:
    if by == "object size":
        return [b for b in (*SIZE_BINS, NO_BOX) if b in bins]
    return sorted(bins, key=lambda b: (not b.isdigit(), int(b) if b.isdigit() else 0, b))


def model_order(models) -> list[str]:
    """pretrained, finetuned, then any other model by name (the report's order)."""
    return sorted(set(models), key=lambda m: (m != "pretrained", m != "finetuned", m))


def cue_conditions(conditions) -> list[str]:
    """The conditions that are a cue (their `+hint` variants included): neither plain nor blind."""
    return sorted(c for c in set(conditions) if c.split("+")[0] not in (PLAIN, BLIND))


def binned_effects(df: pd.DataFrame, facts: list[QuestionFacts], by: str) -> list[BinEffect]:
    """Every (model, cue, bin) of `by` (a key of BINNERS), all question kinds pooled."""
    col, binner = BINNERS[by]
    rows = _with_facts(df, facts)
    rows = rows.assign(bin=[binner(v) for v in rows[col]])
    keep = ["question_id", "correct", "video"]
    out = []
    for model in model_order(rows["model"]):
        mine = rows[rows["model"] == model]
        plain = mine[mine["condition"] == PLAIN]
        if plain.empty:
            continue
        for cond in cue_conditions(mine["condition"]):
            cued = mine[mine["condition"] == cond]
            for b in _bin_order(by, set(cued["bin"])):
                r = paired(cued[cued["bin"] == b][keep], plain[plain["bin"] == b][keep])
                if r["n"]:
                    out.append(BinEffect(model, cond, by, b, r["n"], r["acc_b"], r["acc_a"], r["diff"],
                                         r["ci_low"], r["ci_high"], r["mde_clustered"], r["discordance"]))
    return out


# --- verdicts ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    """Cue vs plain for one model over all questions: the verdict and what it rests on."""

    model: str
    condition: str
    verdict: str  # helps / hurts / no detectable effect / not measured
    reason: str | None  # why not measured
    n: int
    diff: float
    ci_low: float
    ci_high: float
    mde: float  # minimum detectable |difference| (clustered design), inf: none detectable
    discordance: float  # share of questions only one arm got right (0: the arms answered alike)


def classify(n: int, diff: float, ci_low: float, ci_high: float) -> tuple[str, str | None]:
    """(verdict, reason): helps / hurts when the CI excludes 0, else no detectable effect; not measured when
    there is no shared question or no CI (fewer videos than the clustered CI needs)."""
    if not n:
        return NOT_MEASURED, "no question scored in both arms"
    if ci_low is None or ci_high is None or math.isnan(ci_low) or math.isnan(ci_high):
        return NOT_MEASURED, "too few videos for a clustered CI"
    if ci_low > 0:
        return HELPS, None
    if ci_high < 0:
        return HURTS, None
    return NO_EFFECT, None


def verdicts(df: pd.DataFrame, comps: pd.DataFrame) -> list[Verdict]:
    """A verdict per model and cue condition in the predictions `df`, from the comparisons with plain."""
    nan = math.nan
    ok = df[~df["failed"]] if len(df) else df
    out = []
    for model in model_order(ok["model"]) if len(ok) else []:
        conds = set(ok[ok["model"] == model]["condition"])
        for cond in cue_conditions(conds):
            if PLAIN not in conds:
                out.append(Verdict(model, cond, NOT_MEASURED, "no plain condition", 0, nan, nan, nan, nan, nan))
                continue
            sel = comps[(comps["model"] == model) & (comps["condition"] == cond) & (comps["kind"] == ALL)
                        & (comps["vs_model"] == model) & (comps["vs_condition"] == PLAIN)] if len(comps) else comps
            if sel.empty:
                out.append(Verdict(model, cond, NOT_MEASURED, "no question scored in both arms", 0, nan, nan,
                                   nan, nan, nan))
                continue
            r = sel.iloc[0]
            verdict, reason = classify(int(r["n"]), r["diff"], r["ci_low"], r["ci_high"])
            out.append(Verdict(model, cond, verdict, reason, int(r["n"]), float(r["diff"]), float(r["ci_low"]),
                               float(r["ci_high"]), float(r["mde_clustered"]), float(r["discordance"])))
    return out


# --- the first study ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DetectabilityCheck:
    """Whether a paired difference `diff` on n questions was detectable (80% power, two-sided 0.05) under one
    assumed discordant share."""

    assumption: str
    n: int
    diff: float
    discordance: float
    mde: float
    power: float
    detectable: bool
    max_design_effect: float  # clustering by video may inflate the variance this much before it is not


def discordance_bounds(acc_a: float, acc_b: float) -> dict[str, float]:
    """The discordant share two paired accuracies allow: smallest (the worse arm's errors include all the
    better arm's), under independent errors, largest (no question wrong in both)."""
    return {"fewest discordant pairs": abs(acc_a - acc_b),
            "independent errors": acc_a * (1 - acc_b) + acc_b * (1 - acc_a),
            "most discordant pairs": min(1.0, (1 - acc_a) + (1 - acc_b))}


def first_study_detectable(n: int = FIRST_STUDY_N, acc_plain: float = FIRST_STUDY_PLAIN,
                           acc_cued: float = FIRST_STUDY_CUED) -> list[DetectabilityCheck]:
    """Was the first study's plain-vs-cued difference (fine-tuned: 97.29% vs 95.65%, ~2,500 questions)
    detectable? One row per discordance assumption (its paired counts were never published); questions taken
    as independent (clustering by video would only raise the MDE)."""
    diff = acc_plain - acc_cued
    out = []
    for name, psi in discordance_bounds(acc_plain, acc_cued).items():
        mde = mde_mcnemar(n, psi)
        power = mcnemar_power(n, psi, diff)
        needed = mcnemar_pairs(psi, diff)
        out.append(DetectabilityCheck(name, n, diff, psi, mde, power, bool(mde <= abs(diff) + 1e-12),
                                      n / needed if needed > 0 else math.inf))
    return out


# --- all of it, for results.json ----------------------------------------------------------------------------------

def effects_payload(df: pd.DataFrame, comps: pd.DataFrame, facts: list[QuestionFacts] | None) -> dict:
    """results.json's `effects`: verdicts and the first study's check always; the measures that need the
    questions' facts when `facts` is given (else `measured: false`)."""
    from cuelab.evaluate.metrics import json_records

    def table(rows) -> list[dict]:
        return json_records(pd.DataFrame([asdict(r) for r in rows])) if rows else []

    out = {"alpha": ALPHA, "power": POWER, "verdicts": table(verdicts(df, comps)),
           "first_study": table(first_study_detectable()), "measured": facts is not None}
    if facts is not None and len(df):
        out.update(follow=table(follow_rates(df, facts)), referential=table(referential_accuracy(df, facts)),
                   by_size=table(binned_effects(df, facts, "object size")),
                   by_objects=table(binned_effects(df, facts, "objects in the scene")))
    return out
