"""The tiny Qwen3-VL: real classes, saved folder reloads through the Auto classes, deterministic."""

import hashlib
from pathlib import Path

import pytest
import torch

from cuelab.model.load import load_model
from cuelab.model.tiny import QWEN_SPECIAL_TOKENS, build_tiny_model, preset_config, small_test_config


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_tiny_model_reloads_through_auto_classes(tmp_path):
    folder = build_tiny_model(tmp_path / "tiny", small_test_config())
    model, processor = load_model(folder)
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    assert type(processor).__name__ == "Qwen3VLProcessor"
    assert type(processor.video_processor).__name__ == "Qwen3VLVideoProcessor"
    assert processor.video_processor.patch_size == 16 and processor.video_processor.merge_size == 2
    assert processor.video_processor.temporal_patch_size == 2
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    tok = processor.tokenizer
    ids = tok.convert_tokens_to_ids(QWEN_SPECIAL_TOKENS)
    assert ids == list(range(ids[0], ids[0] + len(QWEN_SPECIAL_TOKENS)))  # Qwen's order, contiguous
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert model.config.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert model.config.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    # special tokens are single tokens, not split by the BPE
    assert tok("<|im_start|>user\n<|video_pad|><|im_end|>")["input_ids"][0] == ids[1]
    # text survives a round trip through the byte-level BPE, whatever the characters
    text = "Pushing the red cube from left to right, ünïcode 12.5"
    assert tok.decode(tok(text)["input_ids"]) == text
    # the chat template keeps the newline after the role (the `{%-` trap)
    msgs = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "hi"}]}]
    assert processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>hi<|im_end|>\n<|im_start|>assistant\n")
    # weights as saved (untied embeddings, the large text init range of the recipe)
    assert not torch.equal(model.lm_head.weight, model.model.language_model.embed_tokens.weight)
    assert 0.25 < model.model.language_model.embed_tokens.weight.std().item() < 0.35


def test_tiny_model_is_deterministic_from_seed(tmp_path):
    a = _digest(build_tiny_model(tmp_path / "a", small_test_config(seed=3)))
    b = _digest(build_tiny_model(tmp_path / "b", small_test_config(seed=3)))
    c = _digest(build_tiny_model(tmp_path / "c", small_test_config(seed=4)))
    assert a == b
    assert a["model.safetensors"] != c["model.safetensors"]


@pytest.mark.parametrize("name,hidden,layers", [("qwen3-vl-2b", 2048, 28), ("qwen3-vl-4b", 2560, 36)])
def test_presets_have_the_real_architecture(name, hidden, layers):
    cfg = preset_config(name)
    assert cfg.text_config.hidden_size == hidden and cfg.text_config.num_hidden_layers == layers
    assert cfg.text_config.head_dim == 128 and cfg.text_config.vocab_size == 151936
    assert cfg.vision_config.depth == 24 and cfg.vision_config.out_hidden_size == hidden
    assert cfg.video_token_id == 151656 and cfg.tie_word_embeddings
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("qwen3-vl-70b")


def test_load_model_errors_name_the_folder(tmp_path):
    from cuelab.errors import DataError

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        load_model(tmp_path / "empty")
    folder = build_tiny_model(tmp_path / "tiny", small_test_config())
    with pytest.raises(DataError, match="adapter_config.json"):
        load_model(folder, adapter=tmp_path / "empty")


def test_llava_onevision_is_saved_with_the_llava_hf_weight_names(tmp_path):
    """vLLM reads the llava-hf checkpoints' `vision_tower.vision_model.*` names; the saved tiny folder uses them
    and transformers loads it to the weights the model was built with."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText

    from cuelab.model.families import get_family

    folder = build_tiny_model(tmp_path / "m", small_test_config(), family="llava_onevision")
    keys = list(load_file(folder / "model.safetensors"))
    tower = [k for k in keys if "vision_tower" in k]
    assert tower and all(k.startswith("vision_tower.vision_model.") for k in tower)
    built, _ = get_family("llava_onevision").build_tiny(small_test_config())
    loaded = AutoModelForImageTextToText.from_pretrained(folder).state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in built.state_dict().items())
