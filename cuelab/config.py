"""One typed config for a whole experiment: loaded from YAML, overridable from the CLI (`--set a.b=v`),
and passed to every stage. Each stage reads only its own section(s); `stage_hash` fingerprints them so
the pipeline can skip a stage whose outputs were made with the same settings."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from cuelab.errors import DataError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class SyntheticConfig(Section):
    videos: int = 200
    seed: int = 0
    width: int = 160
    height: int = 120
    fps: float = 12.0
    min_seconds: float = 2.0
    max_seconds: float = 4.0
    min_objects: int = 2
    max_objects: int = 4
    gaps: float = 0.0  # fraction of annotated frames left out of annotations.json, as in the real data
    single_object_fraction: float = 0.0  # scenes with one object (easy curriculum scenes)
    templates: list[str] | None = None  # restrict to these template names (None: all)
    object_scale: float = 1.0  # object size multiplier (larger objects stay legible in small model frames)
    motion_scale: float = 1.0  # amplitude multiplier of the in-place motions (shake, poke, squeeze)


class DataConfig(Section):
    source: Literal["synthetic", "ssv2"] = "synthetic"
    labels: Path | None = None  # SSv2 labels JSON (train.json / validation.json)
    annotations: Path | None = None  # Something-Else annotations JSON
    videos: Path | None = None  # folder of <id>.webm / <id>.mp4 / <id>/NNNN.jpg
    synthetic: SyntheticConfig = SyntheticConfig()


class QuestionsConfig(Section):
    videos: int | None = None  # subset size (None: every usable video)
    test_videos: int = 50
    seed: int = 0
    kinds: list[Literal["object", "verb", "referential"]] = ["object", "verb", "referential"]
    max_placeholder_chars: int = 40
    require_boxes: bool = True  # keep only videos with Something-Else boxes
    single_verb_templates: bool = False  # keep templates with exactly one verb slot (the first study's subset)
    # loosest template-shape level a verb distractor may come from (see cuelab.data.questions.TemplateInfo)
    verb_shape: Literal["exact", "frame", "lead"] = "lead"


class RenderConfig(Section):
    cues: list[str] = ["plain", "box", "trajectory"]
    workers: int = 2
    crf: int = 18
    include_hand: bool = False


class FramesConfig(Section):
    """What the model sees: see cuelab.video.io.sample_frames."""

    fps: float = 2.0
    min_frames: int = 4
    max_frames: int = 32
    total_pixels: int | None = 1_304_576
    max_pixels_per_frame: int = 256 * 416
    min_pixels_per_frame: int = 32 * 32

    def spec(self):
        from cuelab.video.io import FrameSpec

        return FrameSpec(fps=self.fps, min_frames=self.min_frames, max_frames=self.max_frames,
                         total_pixels=self.total_pixels, max_pixels_per_frame=self.max_pixels_per_frame,
                         min_pixels_per_frame=self.min_pixels_per_frame)


class TinyModelConfig(Section):
    """A small random Qwen3-VL built locally (the embedded default; no download)."""

    vocab_size: int = 2048
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 32
    initializer_range: float = 0.3
    # the vision tower's: at Qwen's 0.02 its outputs are ~50x smaller than the text stream they join, and the
    # model learns to look at the video several times slower (docs/demo-research.md)
    vision_initializer_range: float = 0.3
    rope_theta: float = 10000.0
    mrope_section: list[int] = [6, 5, 5]
    vision_depth: int = 1
    vision_hidden_size: int = 64
    vision_num_heads: int = 2
    vision_intermediate_size: int = 128
    deepstack_visual_indexes: list[int] = [0]
    seed: int = 0


class ModelConfig(Section):
    name_or_path: str = "Qwen/Qwen3-VL-2B-Instruct"  # hub id or local folder
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    question_first: bool = False  # put the question text before the video in the user turn
    system_prompt: str | None = None
    tiny: TinyModelConfig | None = None  # set: build this tiny model instead of loading name_or_path


class PhaseConfig(Section):
    """One phase of a curriculum: which questions and for how long."""

    name: str = "main"
    kinds: list[str] | None = None  # None: all kinds
    max_objects: int | None = None  # only scenes with at most this many objects
    fraction: float = 1.0  # share of the phase's step/time budget


class TrainConfig(Section):
    mode: Literal["lora", "full"] = "lora"
    rank: int = 64
    alpha: int = 64
    dropout: float = 0.05
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]
    lora_on_vision: bool = False  # LLM only by default
    lr: float = 1e-4
    vision_lr: float | None = None  # full mode: a separate lr for the vision tower
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float = 1.0
    epochs: float = 1.0
    max_steps: int | None = None
    max_seconds: float | None = None  # a wall-clock budget (the demo's CPU pretraining)
    batch_size: int = 8
    grad_accum: int = 4
    conditions: dict[str, float] = {"plain": 1.0, "trajectory": 1.0}  # condition -> share of samples
    phases: list[PhaseConfig] = [PhaseConfig()]
    seed: int = 0
    bf16: Literal["auto", "on", "off"] = "auto"
    gradient_checkpointing: bool = False
    compile: bool = True  # on a GPU: torch.compile each LLM decoder layer (dynamic shapes; benchmarks/RESULTS.md)
    save_steps: int = 200
    log_steps: int = 10
    num_workers: int = 2  # threads encoding samples (frames + prompt) ahead of the training step
    threads: int | None = None  # torch CPU threads (None: torch's default); a fixed count makes CPU runs bit-exact
    from_checkpoint: str | None = None  # pretrain only: a shipped model made with these settings (cuelab.model.shipped)


class EvalConfig(Section):
    backend: Literal["hf", "vllm"] = "hf"
    conditions: list[str] = ["plain", "box", "trajectory"]
    models: list[Literal["pretrained", "finetuned"]] = ["pretrained", "finetuned"]
    blind: bool = True
    hint: bool = False
    rule: Literal["sum", "mean", "greedy"] = "sum"  # which score picks the answer (all are recorded)
    videos_per_call: int = 4  # hf backend on a GPU: videos scored together (vision, prefix, choices batched)
    compile: bool = True  # hf backend on a GPU: torch.compile the decoder layers and vision blocks
    vllm_server: str | None = None  # URL of a running vLLM server; None: offline LLM


class AttentionConfig(Section):
    enabled: bool = True
    n: int = 200
    conditions: list[str] = ["plain", "box", "trajectory"]
    models: list[Literal["pretrained", "finetuned"]] = ["pretrained", "finetuned"]
    per_head: bool = False
    sink_tokens: int = 4  # top video tokens of the plain condition left out in the *_ns measures
    overlays: int = 3  # questions drawn as plain-vs-cue heatmap GIFs
    cue_threshold: int = 40  # a pixel is the cue's when cued and plain frames differ by more than this
    max_box_gap: int = 6  # frames: a sampled frame without a box borrows the nearest annotated one this close


class ReportConfig(Section):
    title: str = "cuelab report"
    html: bool = True
    previews: int = 2


class ExperimentConfig(Section):
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

    @field_validator("output_dir", mode="before")
    @classmethod
    def _path(cls, v):
        return Path(v)

    def stage_hash(self, *sections: str) -> str:
        """A short fingerprint of the named config sections (e.g. 'data', 'questions')."""
        payload = {}
        for s in sections:  # a section, or a dotted field such as "eval.conditions"
            node = self
            for part in s.split("."):
                node = getattr(node, part)
            payload[s] = _jsonable(node)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _jsonable(v):
    if isinstance(v, BaseModel):
        return json.loads(v.model_dump_json())
    return json.loads(json.dumps(v, default=str))


def _parse_value(text: str):
    return yaml.safe_load(text)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides (value parsed as YAML) to a raw config dict."""
    for item in overrides:
        if "=" not in item:
            raise DataError(f"override {item!r} is not key=value", field=item)
        key, value = item.split("=", 1)
        node = raw
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise DataError(f"override {item!r}: {p!r} is not a section", field=key)
        node[parts[-1]] = _parse_value(value)
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """YAML file (optional) + overrides -> validated ExperimentConfig. Errors name the file and field."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError as e:
            raise DataError("config file not found", file=str(path)) from e
        except yaml.YAMLError as e:
            raise DataError(f"malformed YAML: {e}", file=str(path)) from e
        if not isinstance(raw, dict):
            raise DataError("config must be a mapping", file=str(path))
    raw = apply_overrides(raw, overrides or [])
    try:
        return ExperimentConfig.model_validate(raw)
    except Exception as e:  # pydantic.ValidationError: re-raise naming the file
        raise DataError(f"invalid config: {e}", file=str(path) if path else "<overrides>") from e


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    from cuelab.fsutil import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(_jsonable(cfg), sort_keys=False))
