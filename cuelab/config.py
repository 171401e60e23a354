"""One typed config for a whole experiment: loaded from YAML, overridable from the CLI (`--set a.b=v`),
and passed to every stage. Each stage reads only its own section(s); `stage_hash` fingerprints them so
the pipeline can skip a stage whose outputs were made with the same settings."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, ValidationError,
                      ValidationInfo, field_validator, model_serializer, model_validator)

from cuelab.errors import DataError
from cuelab.fsutil import read_text


def _known_cue(name: str) -> str:
    """A condition names a cue of the registry (it also names the videos/<cue>/ folder stages read)."""
    from cuelab.video.cues import CUES

    if name not in CUES:
        raise ValueError(f"unknown cue {name!r}; known cues: {', '.join(CUES)}")
    return name


CueName = Annotated[str, AfterValidator(_known_cue)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    # fields added after runs and shipped checkpoints were fingerprinted: left out of the dump (hence of every
    # fingerprint and saved config.yaml) while at their default, so those runs stay up to date
    _added_later: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler):
        data = handler(self)
        for name in self._added_later:
            if name in data and getattr(self, name) == type(self).model_fields[name].default:
                del data[name]
        return data


# Value rules: a count of at least one, a positive amount, a share in [0, 1].
Count = Annotated[int, Field(ge=1)]
Positive = Annotated[float, Field(gt=0)]
Share = Annotated[float, Field(ge=0, le=1)]


def _ordered(low_name: str, low, high_name: str, high) -> None:
    if low is not None and high is not None and low > high:
        raise ValueError(f"{low_name} ({low}) must not exceed {high_name} ({high})")


class SyntheticConfig(Section):
    videos: Count = 200
    seed: int = 0
    width: Count = 160
    height: Count = 120
    fps: Positive = 12.0
    min_seconds: Positive = 2.0
    max_seconds: Positive = 4.0
    min_objects: Count = 2
    max_objects: Count = 4
    gaps: Share = 0.0  # fraction of annotated frames left out of annotations.json, as in the real data
    single_object_fraction: Share = 0.0  # scenes with one object (easy curriculum scenes)
    templates: list[str] | None = None  # restrict to these template names (None: all)
    object_scale: Positive = 1.0  # object size multiplier (larger objects stay legible in small model frames)
    motion_scale: float = Field(1.0, ge=0)  # amplitude multiplier of the in-place motions (shake, poke, squeeze)
    # scenes where a second object does a different in-place action at the same time (the labelled action stays
    # the first object's): only a cue says which motion a `referential_verb` question asks about
    two_actor_fraction: Share = 0.0
    _added_later: ClassVar[frozenset[str]] = frozenset({"two_actor_fraction"})

    @model_validator(mode="after")
    def _ranges(self):
        _ordered("min_objects", self.min_objects, "max_objects", self.max_objects)
        _ordered("min_seconds", self.min_seconds, "max_seconds", self.max_seconds)
        return self


class DataConfig(Section):
    source: Literal["synthetic", "ssv2"] = "synthetic"
    # SSv2 labels JSON (train.json / validation.json), or several read in order (the first study: train + validation)
    labels: Path | list[Path] | None = None
    annotations: Path | None = None  # Something-Else annotations JSON
    videos: Path | None = None  # folder of <id>.webm / <id>.mp4 / <id>/NNNN.jpg
    synthetic: SyntheticConfig = SyntheticConfig()


class QuestionsConfig(Section):
    videos: Count | None = None  # subset size (None: every usable video)
    test_videos: Count = 50
    seed: int = 0
    kinds: list[Literal["object", "verb", "referential", "referential_verb", "scene_object"]] = [
        "object", "verb", "referential"]
    max_placeholder_chars: Count = 40
    require_boxes: bool = True  # keep only videos with Something-Else boxes
    single_verb_templates: bool = False  # keep templates with exactly one verb slot (the first study's subset)
    # loosest template-shape level a verb distractor may come from (see cuelab.data.questions.TemplateInfo)
    verb_shape: Literal["exact", "frame", "lead"] = "lead"
    # cuelab: cuelab.data.questions (seeded stratified split, same-slot distinct distractors, referential);
    # first_study: cuelab.data.first_study_protocol (the study's filter, text, pools and first-N test split)
    builder: Literal["cuelab", "first_study"] = "cuelab"
    pool_first_ids: Count | None = None  # first_study: only the first N Something-Else ids in string order

    @model_validator(mode="after")
    def _split(self):
        if self.videos is not None and self.test_videos >= self.videos:
            raise ValueError(f"test_videos ({self.test_videos}) must be below videos ({self.videos}): "
                             "the rest are the training videos")
        return self


class RenderConfig(Section):
    cues: list[CueName] = ["plain", "box", "trajectory"]
    workers: Count = 2
    crf: int = Field(18, ge=0, le=51)  # libx264's range
    include_hand: bool = False
    fps: Positive | None = None  # output frame rate (None: the source's); the first study wrote 12 fps
    even: Literal["pad", "crop"] = "pad"  # odd frame sizes padded (cuelab) or cropped (the first study) to even
    preset: str = "veryfast"  # libx264 preset (the first study passed none: "medium")


class FramesConfig(Section):
    """What the model sees: see cuelab.video.io.sample_frames."""

    # fps: sample at `fps` within min/max frames (cuelab.video.io.sample_indices); first_study_vllm: the frames the
    # first study's vLLM 0.11 server gave the model for num_frames=64 (cuelab.video.first_study_frames)
    rule: Literal["fps", "first_study_vllm"] = "fps"
    fps: Positive = 2.0
    min_frames: Count = 4
    max_frames: Count = 32
    total_pixels: Count | None = 1_304_576
    max_pixels_per_frame: Count = 256 * 416
    min_pixels_per_frame: Count = 32 * 32

    @model_validator(mode="after")
    def _ranges(self):
        _ordered("min_frames", self.min_frames, "max_frames", self.max_frames)
        _ordered("min_pixels_per_frame", self.min_pixels_per_frame, "max_pixels_per_frame",
                 self.max_pixels_per_frame)
        return self

    def spec(self, geometry=None):
        """The FrameSpec of these settings for a model family's FrameGeometry (None: Qwen3-VL's, factor 32 and
        temporal patch 2)."""
        from cuelab.video.io import FrameSpec

        sizes = ({"factor": geometry.factor, "temporal_patch": geometry.temporal_patch, "size": geometry.size}
                 if geometry else {})
        return FrameSpec(fps=self.fps, min_frames=self.min_frames, max_frames=self.max_frames,
                         total_pixels=self.total_pixels, max_pixels_per_frame=self.max_pixels_per_frame,
                         min_pixels_per_frame=self.min_pixels_per_frame, rule=self.rule, **sizes)


class TinyModelConfig(Section):
    """A small random Qwen3-VL built locally (the embedded default; no download)."""

    vocab_size: Count = 2048
    hidden_size: Count = 128
    intermediate_size: Count = 256
    num_hidden_layers: Count = 2
    num_attention_heads: Count = 4
    num_key_value_heads: Count = 2
    head_dim: Count = 32
    initializer_range: Positive = 0.3
    # the vision tower's: at Qwen's 0.02 its outputs are ~50x smaller than the text stream they join, and the
    # model learns to look at the video several times slower (docs/demo-research.md)
    vision_initializer_range: Positive = 0.3
    rope_theta: Positive = 10000.0
    mrope_section: list[Annotated[int, Field(ge=0)]] = [6, 5, 5]
    vision_depth: Count = 1
    vision_hidden_size: Count = 64
    vision_num_heads: Count = 2
    vision_intermediate_size: Count = 128
    deepstack_visual_indexes: list[int] = [0]
    seed: int = 0

    @model_validator(mode="after")
    def _shapes(self):
        """What Qwen3-VL's layers need (its text attention takes head_dim as given, so hidden_size is free)."""
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                             f"num_key_value_heads ({self.num_key_value_heads})")
        if self.vision_hidden_size % self.vision_num_heads:
            raise ValueError(f"vision_hidden_size ({self.vision_hidden_size}) must be a multiple of "
                             f"vision_num_heads ({self.vision_num_heads})")
        if sum(self.mrope_section) * 2 != self.head_dim:
            raise ValueError(f"mrope_section {self.mrope_section} must sum to head_dim / 2 = {self.head_dim / 2:g}")
        bad = [i for i in self.deepstack_visual_indexes if not 0 <= i < self.vision_depth]
        if bad:  # an index past the last vision block would silently never feed the text layers
            raise ValueError(f"deepstack_visual_indexes {bad} must be vision block numbers 0..{self.vision_depth - 1}")
        return self


class ModelConfig(Section):
    name_or_path: str = "Qwen/Qwen3-VL-2B-Instruct"  # hub id or local folder
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    question_first: bool = False  # put the question text before the video in the user turn
    system_prompt: str | None = None
    # cuelab: question, choices one per line, instruction, answer + <|im_end|>; first_study: the study's text
    # verbatim (choices as a Python list) and its training target (answer + end token + newline)
    prompt: Literal["cuelab", "first_study"] = "cuelab"
    tiny: TinyModelConfig | None = None  # set: build this tiny model instead of loading name_or_path
    # the model family (cuelab.model.families); None: the checkpoint's own (its config.json model_type), and for a
    # tiny model qwen3_vl
    family: str | None = None

    @field_validator("family")
    @classmethod
    def _known_family(cls, v):
        from cuelab.model.families import FAMILIES

        if v is not None and v not in FAMILIES:
            raise ValueError(f"unknown model family {v!r} (known: {', '.join(FAMILIES)})")
        return v


class PhaseConfig(Section):
    """One phase of a curriculum: which questions and for how long."""

    name: str = "main"
    kinds: list[str] | None = None  # None: all kinds
    max_objects: Count | None = None  # only scenes with at most this many objects
    fraction: float = Field(1.0, gt=0, le=1)  # share of the phase's step/time budget


class TrainConfig(Section):
    mode: Literal["lora", "full"] = "lora"
    rank: Count = 64
    alpha: Count = 64
    dropout: Share = 0.05
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]
    lora_on_vision: bool = False  # LLM only by default
    lr: Positive = 1e-4
    vision_lr: Positive | None = None  # full mode: a separate lr for the vision tower
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: Share = 0.03
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    max_grad_norm: Positive = 1.0
    epochs: Positive = 1.0
    max_steps: Count | None = None
    max_seconds: Positive | None = None  # a wall-clock budget (the demo's CPU pretraining)
    batch_size: Count = 8
    grad_accum: Count = 4
    # condition -> share of samples
    conditions: dict[CueName, Annotated[float, Field(ge=0)]] = {"plain": 1.0, "trajectory": 1.0}
    phases: list[PhaseConfig] = Field([PhaseConfig()], min_length=1)
    seed: int = 0
    bf16: Literal["auto", "on", "off"] = "auto"
    gradient_checkpointing: bool = False
    compile: bool = True  # on a GPU: torch.compile each LLM decoder layer (dynamic shapes; benchmarks/RESULTS.md)
    save_steps: Count = 200
    log_steps: Count = 10
    # threads encoding samples (frames + prompt) ahead of the training step; 0: encoded in the training loop
    num_workers: int = Field(2, ge=0)
    threads: Count | None = None  # torch CPU threads (None: torch's default); a fixed count makes CPU runs bit-exact
    from_checkpoint: str | None = None  # pretrain only: a shipped model made with these settings (cuelab.model.shipped)

    @model_validator(mode="after")
    def _shares(self):
        if not sum(self.conditions.values()) > 0:
            raise ValueError(f"conditions {self.conditions} need at least one positive share")
        return self


class SamplingConfig(Section):
    """`eval.rule: sampled`: the first study's decoding (vLLM guided choice with sampling, exact string match)."""

    temperature: float = Field(0.1, ge=0)
    top_p: float = Field(0.8, gt=0, le=1)
    top_k: int = Field(20, ge=-1)
    presence_penalty: float = 1.5
    repetition_penalty: Positive = 1.0
    seed: int = 3407
    max_tokens: Count = 16
    constrained: bool = True  # False: free text scored by exact match (a vLLM that ignored guided_choice)


class EvalConfig(Section):
    backend: Literal["hf", "vllm"] = "hf"
    conditions: list[CueName] = ["plain", "box", "trajectory"]
    models: list[Literal["pretrained", "finetuned"]] = ["pretrained", "finetuned"]
    blind: bool = True
    hint: bool = False
    # which score picks the answer (sum/mean/greedy are all recorded); sampled: the first study's decoding
    rule: Literal["sum", "mean", "greedy", "sampled"] = "sum"
    sampling: SamplingConfig = SamplingConfig()
    videos_per_call: Count = 4  # hf backend on a GPU: videos scored together (vision, prefix, choices batched)
    compile: bool = True  # hf backend on a GPU: torch.compile the decoder layers and vision blocks
    vllm_server: str | None = None  # URL of a running vLLM server; None: offline LLM


class AttentionConfig(Section):
    enabled: bool = True
    n: Count = 200
    conditions: list[CueName] = ["plain", "box", "trajectory"]
    models: list[Literal["pretrained", "finetuned"]] = ["pretrained", "finetuned"]
    per_head: bool = False
    sink_tokens: int = Field(4, ge=0)  # top video tokens of the plain condition left out in the *_ns measures
    overlays: int = Field(3, ge=0)  # questions drawn as plain-vs-cue heatmap GIFs
    # a pixel is the cue's when cued and plain frames differ by more than this
    cue_threshold: int = Field(40, ge=0, le=255)
    # frames: a sampled frame without a box borrows the nearest annotated one this close
    max_box_gap: int = Field(6, ge=0)


class ReportConfig(Section):
    title: str = "cuelab report"
    html: bool = True
    previews: int = Field(2, ge=0)


class ModelEntry(Section):
    """One model of a multi-model run (`models:` of ExperimentConfig): a short `name`, and what this model changes
    in the sections that depend on the model. `model` is merged over the top-level `model:` section (nested
    fields one by one: `{family: smolvlm}` keeps the top-level tiny sizes), then validated as a ModelConfig;
    `train` and `eval`, when given, are merged over the top-level ones the same way. Everything else (data,
    questions, render, frames, pretrain, attention, report) is the top-level config's, shared by every model.

    The merge happens when the config is loaded, so an entry holds its full sections (as config.yaml records
    them) and errors name the entry's field: `models.1.model.family`."""

    name: str  # the model's folder under OUTPUT/models/ and its label in the cross-model report
    model: ModelConfig = ModelConfig()
    train: TrainConfig | None = None  # None: the top-level train section
    eval: EvalConfig | None = None  # None: the top-level eval section

    #: folder names of a single run's models/ (tiny-init, pretrain-run, ...) and the report's model rows: an
    #: entry of one of these names would mix with them
    RESERVED: ClassVar[frozenset[str]] = frozenset({"tiny-init", "pretrain-run", "pretrained", "finetune",
                                                    "finetuned"})

    @field_validator("name")
    @classmethod
    def _folder_name(cls, v: str) -> str:
        from cuelab.fsutil import safe_name

        try:
            safe_name(v, what="model name")
        except DataError as e:
            raise ValueError(e.reason) from e
        if v.lower() in cls.RESERVED:
            raise ValueError(f"model name {v!r} is reserved (the folders and rows of a run's own models: "
                             f"{', '.join(sorted(cls.RESERVED))})")
        return v

    @staticmethod
    def merge(base, over, section: type[BaseModel]):
        """`over` laid over `base` (raw values of `section`): a nested config section field by field, anything
        else (a value, a list, a mapping such as train.conditions) replaced whole."""
        import copy
        import typing

        if isinstance(base, BaseModel):
            base = jsonable(base)
        if not (isinstance(base, dict) and isinstance(over, dict)):
            return copy.deepcopy(over)
        out = copy.deepcopy(base)
        for key, value in over.items():
            field = section.model_fields.get(key)
            kinds = typing.get_args(field.annotation) or (field.annotation,) if field else ()
            sub = next((k for k in kinds if isinstance(k, type) and issubclass(k, Section)), None)
            out[key] = ModelEntry.merge(base.get(key), value, sub) if sub and key in base else copy.deepcopy(value)
        return out

    @classmethod
    def merged_raw(cls, raw: dict) -> dict:
        """The raw config with every entry's `model` (and given `train` / `eval`) merged over the top-level ones,
        before validation: so pydantic validates each entry's full sections and names their fields."""
        entries = raw.get("models")
        if not isinstance(entries, list):
            return raw
        merged = []
        for entry in entries:
            if isinstance(entry, dict):
                entry = dict(entry)
                entry["model"] = cls.merge(raw.get("model") or {}, entry.get("model") or {}, ModelConfig)
                for section, kind in (("train", TrainConfig), ("eval", EvalConfig)):
                    if entry.get(section) is not None:
                        entry[section] = cls.merge(raw.get(section) or {}, entry[section], kind)
            merged.append(entry)
        return {**raw, "models": merged}


class ExperimentConfig(Section):
    """A whole experiment. With `models:` (a list of ModelEntry) one config runs several models on the same data:
    the model-independent stages (data, questions, render) run once in `output_dir`, each model runs the
    model-dependent ones (model, pretrain, train, eval, attention, report) in `output_dir/models/<name>/`, reading
    the shared dataset, questions and videos, and `output_dir/report/models.md` tables them all (cuelab.pipeline).
    The top-level `model:` is then the base the entries are merged over, not a model of its own. Without
    `models:` nothing of this exists: the dump (config.yaml) and every fingerprint are what they were."""

    # sets the defaults of the switches in cuelab.protocol.SWITCHES; each switch can still be set alone
    protocol: Literal["cuelab", "first-study"] = "cuelab"
    name: str = "experiment"
    output_dir: Path = Path("runs/experiment")
    seed: int = 0
    data: DataConfig = DataConfig()
    questions: QuestionsConfig = QuestionsConfig()
    render: RenderConfig = RenderConfig()
    frames_train: FramesConfig = FramesConfig()
    frames_eval: FramesConfig = FramesConfig(max_frames=64, total_pixels=None)
    model: ModelConfig = ModelConfig()
    pretrain: TrainConfig | None = None  # demo only: full training of the tiny model on plain videos
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    attention: AttentionConfig = AttentionConfig()
    report: ReportConfig = ReportConfig()
    # several models on the same data and videos (ModelEntry); empty: the one model of `model:`
    models: list[ModelEntry] = []
    _added_later: ClassVar[frozenset[str]] = frozenset({"models"})

    @model_validator(mode="before")
    @classmethod
    def _protocol(cls, raw):
        from cuelab.protocol import apply_protocol

        raw = apply_protocol(raw)  # first, so that the entries inherit the protocol's model, train and eval values
        return ModelEntry.merged_raw(raw) if isinstance(raw, dict) else raw

    @field_validator("output_dir", mode="before")
    @classmethod
    def _path(cls, v):
        return Path(v)

    @field_validator("models")
    @classmethod
    def _entries(cls, entries: list[ModelEntry], info: ValidationInfo) -> list[ModelEntry]:
        """Names unique (ignoring case: folders on a case-insensitive disk); and no entry changes the conditions,
        which decide the videos the shared render stage makes for every model."""
        seen: dict[str, int] = {}
        for i, entry in enumerate(entries):
            first = seen.setdefault(entry.name.lower(), i)
            if first != i:
                raise ValueError(f"models.{i}.name: {entry.name!r} is already the name of models.{first} "
                                 "(each model needs its own folder)")
            for section, given in (("train", entry.train), ("eval", entry.eval)):
                top = info.data.get(section)
                if given is not None and top is not None and list(given.conditions) != list(top.conditions):
                    raise ValueError(f"models.{i}.{section}.conditions: the rendered videos are shared by every "
                                     f"model, so the conditions are set once, in the top-level {section} section "
                                     f"({list(top.conditions)})")
        return entries

    def for_model(self, entry: ModelEntry, output_dir: Path) -> "ExperimentConfig":
        """The single-model config of one entry, run in `output_dir`: named after the entry, its model, train and
        eval sections, the rest this config's. Its fingerprints are those of a standalone run of it."""
        return self.model_copy(update={"name": entry.name, "output_dir": Path(output_dir), "model": entry.model,
                                       "train": entry.train or self.train, "eval": entry.eval or self.eval,
                                       "models": []})

    def stage_hash(self, *sections: str) -> str:

        """A short fingerprint of the named config sections (e.g. 'data', 'questions')."""
        payload = {}
        for s in sections:  # a section, or a dotted field such as "eval.conditions"
            node = self
            for part in s.split("."):
                node = getattr(node, part)
            payload[s] = jsonable(node)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def jsonable(v):
    """A config value (section, model or plain) as plain JSON data: what fingerprints and reports read."""
    if isinstance(v, BaseModel):
        return json.loads(v.model_dump_json())
    return json.loads(json.dumps(v, default=str))


def _parse_value(text: str, item: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:  # e.g. an unclosed list: render.cues=[plain,box
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise DataError(f"override {item!r}: the value is not valid YAML ({problem})",
                        field=item.split("=", 1)[0].strip()) from e


def _child(node, part: str, item: str, key: str, last: bool = False):
    """The section (dict) or list entry `part` of `node` for an override (a list takes a 0-based index)."""
    if isinstance(node, list):
        if not part.isdigit() or int(part) >= len(node):
            raise DataError(f"override {item!r}: {part!r} is not an entry of the list (0..{len(node) - 1})",
                            field=key)
        return int(part)
    if not isinstance(node, dict):
        raise DataError(f"override {item!r}: the parent of {part!r} is not a section", field=key)
    if not last:
        node.setdefault(part, {})
    return part


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides (value parsed as YAML) to a raw config dict; a list entry is named by its
    index (`models.1.model.family=internvl`)."""
    for item in overrides:
        if "=" not in item:
            raise DataError(f"override {item!r} is not key=value", field=item)
        key, value = item.split("=", 1)
        node = raw
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node[_child(node, p, item, key)]
            if not isinstance(node, (dict, list)):
                raise DataError(f"override {item!r}: {p!r} is not a section", field=key)
        node[_child(node, parts[-1], item, key, last=True)] = _parse_value(value, item)
    return raw


def config_error(e: ValidationError, file: str | None = None, overrides: list[str] = ()) -> DataError:
    """One line per config error, each naming the field's dotted path (and the --set that gave it)."""
    given = {o.split("=", 1)[0].strip() for o in overrides}
    problems = []
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        if isinstance(got, (int, float, str, bool)) and err["type"] != "extra_forbidden":
            msg += f" (got {got!r})"
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        by_set = any(where == g or where.startswith(g + ".") for g in given)
        problems.append((where, msg + (" (from --set)" if by_set else "")))
    if len(problems) == 1:
        where, msg = problems[0]
        return DataError(f"invalid value: {msg}", file=file, field=where or None)
    return DataError("invalid config: " + "; ".join(f"{w or '<top>'}: {m}" for w, m in problems), file=file)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                protocol: str | None = None) -> ExperimentConfig:
    """YAML file (optional) + overrides -> validated ExperimentConfig. Errors name the file and field.
    `protocol`: run the file under that protocol instead of its own (its switch settings are dropped so the
    protocol's values apply, sizes kept: cuelab.protocol.switch_protocol); overrides still apply last."""
    raw: dict = {}
    overrides = list(overrides or [])
    if path is not None:
        path = Path(path)
        text = read_text(path)  # missing, a folder, unreadable or not UTF-8: a DataError naming the file
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise DataError(f"malformed YAML: {' '.join(str(e).split())}", file=str(path)) from e
        if not isinstance(raw, dict):
            raise DataError("config must be a mapping", file=str(path))
    if protocol is not None:
        from cuelab.protocol import switch_protocol

        raw = switch_protocol(raw, protocol)
    raw = apply_overrides(raw, overrides)
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        raise config_error(e, str(path) if path else None, overrides) from e


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    from cuelab.fsutil import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(jsonable(cfg), sort_keys=False))
