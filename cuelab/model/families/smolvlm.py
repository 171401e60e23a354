"""SmolVLM2 (HuggingFaceTB/SmolVLM2-2.2B-Instruct, -500M-Video-Instruct): SmolVLMForConditionalGeneration with
SmolVLMProcessor (SmolVLMVideoProcessor).

A video is a row of square frames, each seen whole (never split into sub-images): its SigLIP tower cuts the
frame (`max_image_size`, 384 or 512 px) into 14 or 16 px patches and pixel-shuffles `scale_factor` x
`scale_factor` of them into one language-model token (81 or 64 tokens a frame, row-major). The prompt writes
each frame as "\\nFrame from mm:ss:" + <fake_token_around_image><global-img><image>*n<fake_token_around_image>
after an intro line; the `<image>` placeholders receive the frames' embeddings in order. The language model is a
Llama (SmolLM2) with 1-D positions. The assistant prefix is "Assistant:" and the template writes the answer after
": ", so the answer's tokens start with a space (`answer_prefix`).

The processor forces transformers' DEFAULT_CHAT_TEMPLATE for video prompts whatever the checkpoint says; the
tiny processor carries that template, so blind prompts keep the same layout.
"""

from __future__ import annotations

import math
from typing import Iterable

from cuelab.model.families.base import (FrameGeometry, ModelFamily, VideoFeatures, contiguous_patch_embeddings,
                                        random_from_config, unwrap)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<fake_token_around_image>", "<image>",
                  "<global-img>", "<end_of_utterance>"]
TINY_IMAGE_SIZE, TINY_PATCH, TINY_SCALE = 64, 16, 2  # 4 x 4 patches -> 2 x 2 tokens of 32 px a frame
_TEXTS = ["User:", "Assistant:", "System:", "You are provided the following series of", "frames from a",
          "[H:MM:SS] video.", "Frame from", "one two three four five six seven eight nine ten eleven twelve",
          "thirteen fourteen fifteen sixteen twenty thirty forty fifty sixty seventy eighty ninety hundred"]
_TEXTS += [f"Frame from 00:{s:02d}:" for s in range(60)] + [f"0:00:{s:02d}" for s in range(60)]

# Official config.json values (text: Llama / SmolLM2; vision: SigLIP). 2.2B's vision geometry (384 px, patch 14,
# scale 3) is confirmed by a published config excerpt; the other numbers are as recalled from the hub files and
# could not be re-read offline here.
PRESETS = {
    "smolvlm2-2.2b": dict(text=dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
                                    num_attention_heads=32, num_key_value_heads=32, rope_theta=130000.0,
                                    max_position_embeddings=16384),
                          vision=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                                      num_attention_heads=16, image_size=384, patch_size=14),
                          scale_factor=3),
    "smolvlm2-500m": dict(text=dict(hidden_size=960, intermediate_size=2560, num_hidden_layers=32,
                                    num_attention_heads=15, num_key_value_heads=5, rope_theta=100000.0,
                                    max_position_embeddings=8192),
                          vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                      num_attention_heads=12, image_size=512, patch_size=16),
                          scale_factor=4),
}


class SmolVLM(ModelFamily):
    name = "smolvlm"
    model_types = ("smolvlm",)
    processor_classes = ("SmolVLMProcessor",)
    end_token = "<end_of_utterance>"
    video_token = "<image>"
    answer_prefix = " "  # "Assistant:" + ": "-style answer: the template writes "Assistant: <answer>"
    lm_layer_prefix = r"model\.text_model\.layers\.\d+\."

    # -- frames and prompt ----------------------------------------------------------------------------------------
    def geometry(self, processor=None) -> FrameGeometry:
        """Square frames of the video processor's `max_image_size`; one token covers `cell` px (patch x scale
        factor; the processor knows only tokens per frame, so the cell stands as patch with merge 1)."""
        if processor is None:
            cell = TINY_PATCH * TINY_SCALE
            return FrameGeometry(cell, 1, 1, (TINY_IMAGE_SIZE, TINY_IMAGE_SIZE))
        side = int(processor.video_processor.max_image_size["longest_edge"])
        n = self._tokens_per_side(processor)
        return FrameGeometry(side // n, 1, 1, (side, side))

    @staticmethod
    def _tokens_per_side(processor) -> int:
        n = math.isqrt(int(processor.image_seq_len))
        if n * n != int(processor.image_seq_len):
            raise ValueError(f"image_seq_len {processor.image_seq_len} is not a square number of tokens")
        return n

    def video_kwargs(self, processor, frames, device=None) -> dict:
        want = self.geometry(processor).size
        if (frames.resized_width, frames.resized_height) != want:
            raise ValueError(f"video {frames.video_id}: frames are {frames.resized_width}x{frames.resized_height},"
                             f" the model sees {want[0]}x{want[1]} (sample with the family's FrameSpec.size)")
        return super().video_kwargs(processor, frames, device)

    def video_token_id(self, model) -> int:
        return int(unwrap(model).config.image_token_id)

    # -- model pieces ---------------------------------------------------------------------------------------------
    def language_model(self, model):
        return unwrap(model).model.text_model

    def vision_tower(self, model):
        return unwrap(model).model.vision_model

    def video_pixels(self, inputs: dict, dtype) -> dict:
        return {"pixel_values": inputs["pixel_values"].to(dtype),
                "pixel_attention_mask": inputs["pixel_attention_mask"]}

    def video_features(self, model, pixels: list[dict], device) -> list[VideoFeatures]:
        """Every video's frames through the tower in one call (as one sample's images, which is how the model's
        forward runs them too); tokens come out frame by frame, row-major within a frame."""
        import torch

        inner = unwrap(model)
        pv = torch.cat([p["pixel_values"].to(device, non_blocking=True) for p in pixels], 1)
        mask = torch.cat([p["pixel_attention_mask"].to(device, non_blocking=True) for p in pixels], 1)
        embeds = inner.model.get_image_features(pv, mask, return_dict=True).pooler_output[0]
        per_frame = embeds.shape[0] // pv.shape[1]
        sizes = [p["pixel_values"].shape[1] * per_frame for p in pixels]
        return [VideoFeatures(e, []) for e in torch.split(embeds, sizes)]

    def speedups(self, model, training: bool = False, compile: bool = False,
                 attn_implementation: str = "sdpa") -> None:
        """The vision tower's residual stream row-major (contiguous_patch_embeddings: same values)."""
        contiguous_patch_embeddings(self.vision_tower(model))

    def video_grid(self, inputs: dict, processor):
        """Frames x n x n cells of `cell` px from the top-left. 2.2B: 9 x 9 cells of 42 px cover 378 of the 384 px
        (its 14 px patches leave the last 6 px unseen)."""
        from cuelab.model.video_tokens import VideoGrid

        n = self._tokens_per_side(processor)
        g = self.geometry(processor)
        return VideoGrid(int(inputs["pixel_values"].shape[1]), n, n, g.patch, 1, 1)

    # -- models built here ----------------------------------------------------------------------------------------
    def build_tiny(self, cfg=None, extra_texts: Iterable[str] = ()):
        import torch
        from transformers import SmolVLMForConditionalGeneration

        from cuelab.config import TinyModelConfig
        from cuelab.model.tiny import tiny_corpus, train_bpe

        cfg = cfg or TinyModelConfig()
        vocab, merges = train_bpe(tiny_corpus(list(_TEXTS) + list(extra_texts)),
                                  cfg.vocab_size - len(SPECIAL_TOKENS))
        processor = build_processor(smol_tokenizer(vocab, merges), TINY_IMAGE_SIZE,
                                    (TINY_IMAGE_SIZE // TINY_PATCH // TINY_SCALE) ** 2)
        config = tiny_config(cfg, processor.tokenizer)
        torch.manual_seed(cfg.seed)
        model = SmolVLMForConditionalGeneration(config).float()
        model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
        model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
        return model.eval(), processor

    def random_model(self, preset: str, dtype=None, device=None, attn_implementation: str = "sdpa", seed: int = 0):
        from transformers import SmolVLMForConditionalGeneration

        config = preset_config(preset)
        return random_from_config(SmolVLMForConditionalGeneration, config, dtype, device, attn_implementation, seed)


def smol_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]]):
    """A `GPT2Tokenizer` (SmolLM2's class) from a base vocabulary with SmolVLM's special tokens appended;
    bos `<|im_start|>`, eos `<end_of_utterance>`, pad `<|im_end|>` as in the SmolVLM2 checkpoints."""
    from tokenizers import AddedToken
    from transformers import GPT2Tokenizer

    vocab = dict(vocab)
    for tok in SPECIAL_TOKENS:
        vocab.setdefault(tok, len(vocab))
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=list(merges), unk_token="<|endoftext|>", bos_token="<|im_start|>",
                              eos_token="<end_of_utterance>", pad_token="<|im_end|>")
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
                         special_tokens=True)
    return tokenizer


def build_processor(tokenizer, side: int, image_seq_len: int):
    """SmolVLMProcessor with its real image and video processors for square `side` px frames (SmolVLM's
    normalisation, mean = std = 0.5), video sampling as the checkpoints' (fps 1, at most 64 frames: unused,
    frames come sampled) and transformers' video chat template."""
    from transformers import SmolVLMImageProcessor, SmolVLMProcessor, SmolVLMVideoProcessor
    from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE

    common = dict(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], max_image_size={"longest_edge": side},
                  size={"longest_edge": side})
    image_processor = SmolVLMImageProcessor(do_image_splitting=False, **common)
    video_processor = SmolVLMVideoProcessor(video_sampling={"fps": 1, "max_frames": 64,
                                                            "video_size": {"longest_edge": side}}, **common)
    return SmolVLMProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
                            image_seq_len=image_seq_len, chat_template=DEFAULT_CHAT_TEMPLATE)


def tiny_config(cfg, tokenizer):
    """SmolVLMConfig of the tiny model (TinyModelConfig's sizes; 64 px frames, patch 16, scale factor 2)."""
    from transformers import SmolVLMConfig

    if cfg.vocab_size < len(tokenizer):
        raise ValueError(f"vocab_size {cfg.vocab_size} < tokenizer size {len(tokenizer)}")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = dict(model_type="llama", vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_hidden_layers,
                num_attention_heads=cfg.num_attention_heads, num_key_value_heads=cfg.num_key_value_heads,
                head_dim=cfg.head_dim, initializer_range=cfg.initializer_range, max_position_embeddings=4096,
                rms_norm_eps=1e-5, tie_word_embeddings=False, pad_token_id=ids["<|im_end|>"],
                bos_token_id=ids["<|im_start|>"], eos_token_id=ids["<end_of_utterance>"],
                rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta})
    vision = dict(hidden_size=cfg.vision_hidden_size, intermediate_size=cfg.vision_intermediate_size,
                  num_hidden_layers=cfg.vision_depth, num_attention_heads=cfg.vision_num_heads,
                  image_size=TINY_IMAGE_SIZE, patch_size=TINY_PATCH, initializer_range=cfg.vision_initializer_range)
    return SmolVLMConfig(text_config=text, vision_config=vision, scale_factor=TINY_SCALE,
                         image_token_id=ids["<image>"], tie_word_embeddings=False, pad_token_id=ids["<|im_end|>"])


def preset_config(name: str):
    """SmolVLMConfig of a real SmolVLM2 size (random weights when instantiated; no download)."""
    from transformers import SmolVLMConfig

    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    p = PRESETS[name]
    t = dict(p["text"])
    text = dict(model_type="llama", vocab_size=49280, head_dim=64, hidden_act="silu", rms_norm_eps=1e-5,
                tie_word_embeddings=False, initializer_range=0.02, pad_token_id=2, bos_token_id=1, eos_token_id=2,
                rope_parameters={"rope_type": "default", "rope_theta": t.pop("rope_theta")}, **t)
    return SmolVLMConfig(text_config=text, vision_config=dict(p["vision"]), scale_factor=p["scale_factor"],
                         image_token_id=49190, tie_word_embeddings=False, pad_token_id=2)


FAMILY = SmolVLM()
