"""InternVL3 (OpenGVLab/InternVL3-1B/2B/8B-hf): InternVLForConditionalGeneration with InternVLProcessor (video
processor InternVLVideoProcessor, a Qwen2 tokenizer with InternVL's image tokens).

Every video frame is one fixed-size square image (448 px in the real checkpoints): InternViT cuts it into 14 px
patches and a pixel shuffle of 0.5 merges 2 x 2 patches into one language-model token (256 per frame at 448 px).
The processor writes the video as one line per frame, "Frame{i}: <img><IMG_CONTEXT>*n</img>", and the model
scatters the frames' features into the `<IMG_CONTEXT>` positions in order (frame-major, then row, then column):
videos use the image context token, there is no separate video token in input_ids. The language model is a
Qwen2(.5) decoder with 1-D rope positions; nothing else joins the video tokens (no deepstack).
"""

from __future__ import annotations

from typing import Iterable

from cuelab.model.families.base import FrameGeometry, ModelFamily, VideoFeatures, random_from_config, unwrap

# InternVL3-hf's chat layout (transformers' convert_internvl_weights_to_hf.py): no default system turn; a video
# item is "<video>\n" before or after the text; generation prompt "<|im_start|>assistant\n".
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}"
    "{{ '<image>\n' }}"
    "{% elif content['type'] == 'video' %}"
    "{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}"
    "{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "{{'<|im_end|>\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{'<|im_start|>assistant\n' }}"
    "{% endif %}"
)

# Qwen2.5's special tokens after Qwen-VL's (151657...151664), then InternVL's (151665...: <IMG_CONTEXT> is 151667,
# the real image_token_id), then `<video>`, the text placeholder the processor expands into frames.
QWEN25_EXTRA_TOKENS = ["<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
                       "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]
INTERNVL_TOKENS = ["<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>",
                   "<video>"]
# the tokenizer attributes InternVLProcessor reads (tokenizer_config.json's extra_special_tokens)
EXTRA_SPECIAL_TOKENS = {"start_image_token": "<img>", "end_image_token": "</img>",
                        "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
TINY_IMAGE_SIZE = 112  # tiny frames: 8 x 8 patches of 14 px -> 4 x 4 tokens per frame (fast CPU tests)

# Official config.json values of OpenGVLab/InternVL3-1B/2B/8B-hf as far as recalled: the Qwen2.5-0.5B / 1.5B / 7B
# decoders (vocabulary 151674: Qwen2.5's 151665 + InternVL's 9 tokens) and InternViT-300M-448px-V2_5 (24 blocks,
# 1024 wide, layer norm, qkv bias, no qk norm). Not verified against the hub files here (no network): the
# tie_word_embeddings flags and rope_theta 1e6 in particular.
PRESETS = {
    "internvl3-1b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, tie_word_embeddings=True),
    "internvl3-2b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, tie_word_embeddings=True),
    "internvl3-8b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                         num_key_value_heads=4, tie_word_embeddings=False),
}
_VISION = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
               hidden_act="gelu", norm_type="layer_norm", layer_norm_eps=1e-6, image_size=448, patch_size=14,
               attention_bias=True, use_qk_norm=False, layer_scale_init_value=0.1, use_mean_pooling=True,
               initializer_range=0.02)


def _side(size) -> tuple[int, int]:
    """(width, height) of a processor `size` (a dict or SizeDict with height / width)."""
    get = size.get if isinstance(size, dict) else lambda k: getattr(size, k, None)
    return int(get("width")), int(get("height"))


class InternVL(ModelFamily):
    name = "internvl"
    model_types = ("internvl",)
    processor_classes = ("InternVLProcessor",)
    end_token = "<|im_end|>"
    video_token = "<IMG_CONTEXT>"  # videos fill the image context token's positions

    def geometry(self, processor=None) -> FrameGeometry:
        """14 px patches, 2 x 2 merged by the pixel shuffle, one frame per token, every frame the video
        processor's fixed size."""
        vp = getattr(processor, "video_processor", None)
        return FrameGeometry(14, 2, 1, size=_side(vp.size) if vp is not None else (448, 448))

    def video_kwargs(self, processor, frames, device=None) -> dict:
        """The base arguments (no resampling, no resizing), once the frames are known to have the one size the
        vision tower takes (its features are reshaped to a square grid: any other size breaks or misplaces)."""
        want = self.geometry(processor).size
        if (frames.resized_width, frames.resized_height) != want:
            from cuelab.errors import DataError

            raise DataError(f"frames are {frames.resized_width}x{frames.resized_height}, the model sees "
                            f"{want[0]}x{want[1]} (sample with the family's FrameSpec.size)",
                            video_id=frames.video_id, field="frames.size")
        return super().video_kwargs(processor, frames, device)

    def video_token_id(self, model) -> int:
        return int(unwrap(model).config.image_token_id)

    def vision_tower(self, model):
        return unwrap(model).model.vision_tower

    def video_pixels(self, inputs: dict, dtype) -> dict:
        """The frames as the processor stacked them: pixel_values (T, 3, H, W)."""
        return {"pixel_values": inputs["pixel_values"].to(dtype)}

    def video_features(self, model, pixels: list[dict], device) -> list[VideoFeatures]:
        """One vision-tower call over every video's frames; each frame's tokens row-major (the pixel shuffle's
        order), frames in order: the order the model's forward scatters them into `<IMG_CONTEXT>`."""
        import torch

        inner = unwrap(model)
        pv = torch.cat([p["pixel_values"].to(device, non_blocking=True) for p in pixels])
        feats = inner.model.get_image_features(pixel_values=pv, return_dict=True).pooler_output
        sizes = [int(p["pixel_values"].shape[0]) for p in pixels]
        return [VideoFeatures(f.reshape(-1, f.shape[-1]), []) for f in torch.split(feats, sizes)]

    def video_grid(self, inputs: dict, processor):
        """T frames x (H / 28) x (W / 28) cells of 28 px (14 px patches merged 2 x 2), from the pixel values."""
        from cuelab.model.video_tokens import VideoGrid

        g = self.geometry(processor)
        t, _, h, w = (int(x) for x in inputs["pixel_values"].shape)
        return VideoGrid(t, h // g.factor, w // g.factor, g.patch, g.merge, g.temporal_patch)

    # -- models built here ----------------------------------------------------------------------------------------
    def build_tiny(self, cfg=None, extra_texts: Iterable[str] = ()):
        """(model, processor): a random InternVL of cfg's sizes with a locally trained tokenizer, 112 px frames."""
        import torch
        from transformers import InternVLForConditionalGeneration

        from cuelab.config import TinyModelConfig

        cfg = cfg or TinyModelConfig()
        processor = build_processor(_tokenizer(cfg.vocab_size, extra_texts), TINY_IMAGE_SIZE)
        config = tiny_config(cfg, processor.tokenizer)
        torch.manual_seed(cfg.seed)
        model = InternVLForConditionalGeneration(config).float()
        model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
        model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
        return model.eval(), processor

    def random_model(self, preset: str, dtype=None, device=None, attn_implementation: str = "sdpa", seed: int = 0):
        """An InternVL3 of preset `name` (internvl3-1b / -2b / -8b) with random weights, built on `device`."""
        from transformers import InternVLForConditionalGeneration

        config = preset_config(preset)
        return random_from_config(InternVLForConditionalGeneration, config, dtype, device, attn_implementation, seed)


def _tokenizer(vocab_size: int, extra_texts: Iterable[str]):
    """A Qwen2Tokenizer trained here on the project's text, with Qwen2.5's and InternVL's special tokens in their
    real order and InternVL's named image tokens."""
    from tokenizers import AddedToken
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    from cuelab.model.tiny import QWEN_SPECIAL_TOKENS, tiny_corpus, train_bpe

    special = QWEN_SPECIAL_TOKENS + QWEN25_EXTRA_TOKENS + INTERNVL_TOKENS
    vocab, merges = train_bpe(tiny_corpus(extra_texts), vocab_size - len(special))
    for tok in special:  # ids in order, before eos / pad are named (naming them first would add them first)
        vocab.setdefault(tok, len(vocab))
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=list(merges), unk_token=None, eos_token="<|im_end|>",
                               pad_token="<|endoftext|>", extra_special_tokens=dict(EXTRA_SPECIAL_TOKENS))
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in special], special_tokens=True)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_processor(tokenizer, image_size: int = 448):
    """The real InternVLProcessor classes around `tokenizer` for `image_size` px frames (ImageNet normalisation,
    bicubic resize as fallback only: frames come sized by sample_frames)."""
    from transformers import GotOcr2ImageProcessor, InternVLProcessor, InternVLVideoProcessor

    size = {"height": image_size, "width": image_size}
    common = dict(size=size, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD, do_convert_rgb=True)
    image_processor = GotOcr2ImageProcessor(crop_to_patches=False, **common)
    video_processor = InternVLVideoProcessor(**common)
    per_frame = (image_size // 14 // 2) ** 2  # pixel shuffle 0.5: 2 x 2 patches per token
    return InternVLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
                             image_seq_length=per_frame, chat_template=CHAT_TEMPLATE)


def tiny_config(cfg, tokenizer):
    """InternVLConfig of the tiny model (cfg: a TinyModelConfig); token ids taken from `tokenizer`."""
    from transformers import InternVLConfig

    if cfg.vocab_size < len(tokenizer):
        raise ValueError(f"vocab_size {cfg.vocab_size} < tokenizer size {len(tokenizer)}")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>", "<IMG_CONTEXT>")}
    text = dict(model_type="qwen2", vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_hidden_layers,
                num_attention_heads=cfg.num_attention_heads, num_key_value_heads=cfg.num_key_value_heads,
                head_dim=cfg.head_dim, initializer_range=cfg.initializer_range, max_position_embeddings=4096,
                rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
                tie_word_embeddings=False, bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"])
    vision = dict(_VISION, hidden_size=cfg.vision_hidden_size, num_hidden_layers=cfg.vision_depth,
                  num_attention_heads=cfg.vision_num_heads, intermediate_size=cfg.vision_intermediate_size,
                  image_size=TINY_IMAGE_SIZE, initializer_range=cfg.vision_initializer_range)
    return InternVLConfig(text_config=text, vision_config=vision, image_token_id=ids["<IMG_CONTEXT>"],
                          image_seq_length=(TINY_IMAGE_SIZE // 28) ** 2, tie_word_embeddings=False)


def preset_config(name: str):
    """InternVLConfig of a real InternVL3 size (random weights when instantiated; no download)."""
    from transformers import InternVLConfig

    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    p = PRESETS[name]
    text = dict(model_type="qwen2", vocab_size=151674, hidden_act="silu", max_position_embeddings=32768,
                rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
                bos_token_id=151643, eos_token_id=151645, initializer_range=0.02, **p)
    return InternVLConfig(text_config=text, vision_config=dict(_VISION), image_token_id=151667, image_seq_length=256,
                          downsample_ratio=0.5, projector_hidden_act="gelu", vision_feature_layer=-1,
                          vision_feature_select_strategy="default", tie_word_embeddings=p["tie_word_embeddings"])


FAMILY = InternVL()
