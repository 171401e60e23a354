"""A small random Qwen3-VL built locally (the embedded default: no download), and the exact Qwen3-VL-2B/-4B
architectures with random weights for GPU benchmarks.

The tiny model uses the REAL classes end to end: a byte-level BPE tokenizer trained here with Qwen's
pre-tokenizer and special tokens (as `Qwen2Tokenizer`), `Qwen2VLImageProcessor` / `Qwen3VLVideoProcessor`
(patch 16, merge 2, temporal patch 2), a Qwen3-VL-style chat template, and `Qwen3VLForConditionalGeneration`.
The saved folder reloads through AutoProcessor / AutoModelForImageTextToText like a hub checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from cuelab.config import TinyModelConfig

# Qwen's special tokens in Qwen's id order (151643 ... 151656 in the real vocabulary). They are appended after
# the base vocabulary in this order BEFORE eos/pad are named: naming eos first would add it first and shift ids.
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]

# Qwen3-VL's layout without tools or thinking: no default system turn; generation prompt "<|im_start|>assistant\n".
# `{{- ... + '\n' }}` (not a `{%-` tag after the role) keeps the newline that follows the role.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\n' }}"
    "{%- if message['content'] is string %}"
    "{{- message['content'] }}"
    "{%- else %}"
    "{%- for item in message['content'] %}"
    "{%- if item['type'] == 'image' or 'image' in item %}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif item['type'] == 'video' or 'video' in item %}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif 'text' in item %}"
    "{{- item['text'] }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- endif %}"
    "{{- '<|im_end|>\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\n' }}"
    "{%- endif %}"
)

# Words the project's prompts use (question frames, choices, objects, SSv2-like verbs) plus generic English,
# so the small vocabulary spends its merges on text the model will actually read.
_WORDS = """
what which who where when how is are was were the a an of in on to from into onto with without at by for and or
not it its this that something someone object objects thing things box trajectory path marked drawn colored
video clip frame frames seconds second question answer choices choice options option fill blank one following
pushing pulling lifting dropping putting taking moving covering uncovering turning rotating throwing catching
picking placing holding showing opening closing folding unfolding tipping poking squeezing stacking spinning
sliding rolling falling approaching away closer further left right up down top bottom front behind next near
over under across along towards toward back forth side edge table hand camera nothing empty upside so that
red green blue yellow orange purple pink cyan magenta white black gray grey brown teal lime navy maroon olive
cube ball sphere box cylinder cone star ring triangle square circle disk block cup bottle pen book phone
striped dotted plain checkered shiny matte large small big tiny little tall short wide narrow long round flat
first second third fourth last before after while then still slowly quickly again both other another each
"""

_SENTENCES = [
    "Pushing something from left to right", "Pushing something from right to left",
    "Putting something on something", "Lifting something up completely", "Dropping something into something",
    "Covering something with something", "Moving something closer to something",
    "Moving something away from something", "Pulling something from right to left",
    "Taking something out of something", "Turning something upside down", "Rolling something on a flat surface",
    "What is the object in the red box?", "Which object follows the drawn trajectory?",
    "Fill in the blank: _____ the red cube from left to right.",
    "Choices:", "Answer with one of the choices.", "The object is marked in the video.",
    "<0.5 seconds><1.5 seconds><2.5 seconds><3.5 seconds>",
]


def _synthetic_sentences() -> list[str]:
    """The synthetic dataset's templates filled with its object names (and with the question blank)."""
    from cuelab.vocabulary import OBJECT_NAMES, all_templates

    out = []
    for i, tpl in enumerate(all_templates()):
        for j, name in enumerate(OBJECT_NAMES):
            other = OBJECT_NAMES[(i + j + 1) % len(OBJECT_NAMES)]
            text = tpl.text.replace("[something]", name, 1).replace("[something]", other, 1)
            out += [text, text.replace(name, "_____", 1), name]
    return out


def tiny_corpus(extra_texts: Iterable[str] = (), synthetic: bool = True) -> list[str]:
    """Training text for the tiny tokenizer: the project's vocabulary, the synthetic templates filled with
    object names, numbers and timestamps, and `extra_texts` (e.g. the run's question texts)."""
    words = _WORDS.split()
    texts = list(_SENTENCES) + (_synthetic_sentences() if synthetic else [])
    texts += [" ".join(words[i:i + 12]) for i in range(0, len(words), 12)]
    texts += words + [w.capitalize() for w in words] + [f" {w}" for w in words]
    texts += [f"<{t / 10:.1f} seconds>" for t in range(0, 200, 5)] + [str(i) for i in range(100)]
    texts += list(extra_texts)
    return texts


def train_bpe(texts: list[str], vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE (Qwen2's pre-tokenizer) trained on `texts`; returns (vocab, merges) without specials."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False, special_tokens=[])
    tok.train_from_iterator(texts, trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return dict(model["vocab"]), merges


def qwen_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]]):
    """A `Qwen2Tokenizer` from a base vocabulary and merges, with Qwen's special tokens appended in Qwen's id
    order (so the real files give 151643..151656), eos `<|im_end|>` and pad `<|endoftext|>`."""
    from tokenizers import AddedToken
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    vocab = dict(vocab)
    for tok in QWEN_SPECIAL_TOKENS:  # ids in order, before eos/pad are named
        if tok not in vocab:
            vocab[tok] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=list(merges), unk_token=None, eos_token="<|im_end|>",
                               pad_token="<|endoftext|>")
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS],
                         special_tokens=True)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def qwen_tokenizer_from_files(folder: str | Path):
    """The real Qwen tokenizer from `vocab.json` + `merges.txt` (e.g. ../shared/fixtures/qwen-tokenizer)."""
    folder = Path(folder)
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    merges = [tuple(line.split(" ")) for line in (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
              if line and not line.startswith("#version")]
    return qwen_tokenizer(vocab, merges)


def build_processor(tokenizer):
    """The real Qwen3VLProcessor classes around `tokenizer` (patch 16, merge 2, temporal patch 2, Qwen3-VL
    normalisation). Frames come already sized by sample_frames, so the resize bounds are only a fallback."""
    from transformers import Qwen3VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    common = dict(patch_size=16, temporal_patch_size=2, merge_size=2, image_mean=[0.5, 0.5, 0.5],
                  image_std=[0.5, 0.5, 0.5])
    image_processor = Qwen2VLImageProcessor(size={"shortest_edge": 32 * 32, "longest_edge": 16777216}, **common)
    video_processor = Qwen3VLVideoProcessor(size={"shortest_edge": 32 * 32, "longest_edge": 25165824}, fps=2,
                                            **common)
    return Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
                            chat_template=CHAT_TEMPLATE)


def tiny_config(cfg: TinyModelConfig, tokenizer):
    """Qwen3VLConfig of the tiny model; token ids taken from `tokenizer`."""
    from transformers import Qwen3VLConfig

    if cfg.vocab_size < len(tokenizer):
        raise ValueError(f"vocab_size {cfg.vocab_size} < tokenizer size {len(tokenizer)}")
    if sum(cfg.mrope_section) * 2 != cfg.head_dim:
        raise ValueError(f"mrope_section {cfg.mrope_section} must sum to head_dim/2 = {cfg.head_dim // 2}")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    text = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
                num_key_value_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim,
                initializer_range=cfg.initializer_range, max_position_embeddings=4096, rms_norm_eps=1e-6,
                tie_word_embeddings=False, pad_token_id=ids["<|endoftext|>"],
                rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta,
                                 "mrope_section": list(cfg.mrope_section), "mrope_interleaved": True})
    vision = dict(depth=cfg.vision_depth, hidden_size=cfg.vision_hidden_size, num_heads=cfg.vision_num_heads,
                  intermediate_size=cfg.vision_intermediate_size, out_hidden_size=cfg.hidden_size,
                  patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=256,
                  deepstack_visual_indexes=list(cfg.deepstack_visual_indexes), hidden_act="gelu_pytorch_tanh",
                  initializer_range=cfg.vision_initializer_range)
    return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False,
                         image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                         vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
                         bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"])


# Official config.json values of Qwen/Qwen3-VL-2B-Instruct and -4B-Instruct (both tie word embeddings).
PRESETS = {
    "qwen3-vl-2b": dict(text=dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                                  num_attention_heads=16, num_key_value_heads=8),
                        out_hidden_size=2048),
    "qwen3-vl-4b": dict(text=dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                                  num_attention_heads=32, num_key_value_heads=8),
                        out_hidden_size=2560),
}


def preset_config(name: str):
    """Qwen3VLConfig of a real Qwen3-VL size (random weights when instantiated; no download)."""
    from transformers import Qwen3VLConfig

    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: tiny, {', '.join(PRESETS)}")
    p = PRESETS[name]
    text = dict(vocab_size=151936, head_dim=128, hidden_act="silu", max_position_embeddings=262144,
                rms_norm_eps=1e-6, tie_word_embeddings=True, initializer_range=0.02,
                rope_parameters={"rope_type": "default", "rope_theta": 5_000_000, "mrope_section": [24, 20, 20],
                                 "mrope_interleaved": True}, **p["text"])
    vision = dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, in_channels=3, patch_size=16,
                  spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
                  out_hidden_size=p["out_hidden_size"], deepstack_visual_indexes=[5, 11, 17],
                  hidden_act="gelu_pytorch_tanh", initializer_range=0.02)
    return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, image_token_id=151655,
                         video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653,
                         bos_token_id=151643, eos_token_id=151645)


def random_model(name: str, dtype=None, device=None, attn_implementation: str = "sdpa", seed: int = 0):
    """A Qwen3-VL of preset `name` with random weights, built on `device` (for GPU benchmarks)."""
    from transformers import Qwen3VLForConditionalGeneration

    from cuelab.model.families.base import random_from_config

    return random_from_config(Qwen3VLForConditionalGeneration, preset_config(name), dtype, device,
                              attn_implementation, seed)


def build_tiny(cfg: TinyModelConfig | None = None, extra_texts: Iterable[str] = ()):
    """(model, processor) of the tiny model, in memory, deterministic from cfg.seed."""
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    cfg = cfg or TinyModelConfig()
    vocab, merges = train_bpe(tiny_corpus(extra_texts), cfg.vocab_size - len(QWEN_SPECIAL_TOKENS))
    tokenizer = qwen_tokenizer(vocab, merges)
    processor = build_processor(tokenizer)
    config = tiny_config(cfg, tokenizer)
    torch.manual_seed(cfg.seed)
    model = Qwen3VLForConditionalGeneration(config).float()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), processor


def build_tiny_model(out_dir: str | Path, cfg: TinyModelConfig | None = None,
                     extra_texts: Iterable[str] = (), family: str | None = None) -> Path:
    """Build the tiny model of `family` (None: qwen3_vl) and save it (model + processor) to `out_dir`; returns
    the folder. The folder is written next to its final place and renamed, so a crash leaves no half model."""
    from cuelab.fsutil import atomic_dir
    from cuelab.model.families import DEFAULT, get_family

    out_dir = Path(out_dir)
    fam = get_family(family or DEFAULT)
    model, processor = fam.build_tiny(cfg, extra_texts)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        fam.serving_layout(tmp)
    return out_dir


def small_test_config(seed: int = 0) -> TinyModelConfig:
    """An even smaller model (~0.3M parameters) for fast CPU tests; head_dim stays 32 (vLLM's CPU kernels)."""
    return TinyModelConfig(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=32, vision_hidden_size=32,
                           vision_num_heads=1, vision_intermediate_size=64, seed=seed)


def qwen_id_processor(cfg: TinyModelConfig | None = None):
    """The tiny tokenizer's text vocabulary padded to 151,643 entries, so Qwen's special tokens get their real
    ids (151643...): prompts from it fit the real 2B/4B configs without the real tokenizer files (GPU
    benchmarks). The padding entries are never produced (no merge leads to them)."""
    cfg = cfg or TinyModelConfig()
    # (no synthetic templates: their module needs PyAV, which GPU machines may lack)
    vocab, merges = train_bpe(tiny_corpus(synthetic=False), cfg.vocab_size - len(QWEN_SPECIAL_TOKENS))
    for i in range(len(vocab), 151643):
        vocab[f"<|unused_{i}|>"] = i
    return build_processor(qwen_tokenizer(vocab, merges))
