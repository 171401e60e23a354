"""Qwen3-VL model and processor from a hub id or a local folder (optionally with a PEFT LoRA adapter)."""

from __future__ import annotations

from pathlib import Path

from cuelab.errors import DataError

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16", "bf16": "bfloat16",
           "fp32": "float32", "fp16": "float16"}


def resolve_dtype(dtype="auto", device=None):
    """'auto' -> bfloat16 on a CUDA device, float32 elsewhere (the tiny model and CPU tests need float32)."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        dev = torch.device(device) if device is not None else None
        on_cuda = dev.type == "cuda" if dev is not None else torch.cuda.is_available()
        return torch.bfloat16 if on_cuda and torch.cuda.is_bf16_supported() else torch.float32
    if dtype not in _DTYPES:
        raise DataError(f"unknown dtype {dtype!r} (auto, float32, bfloat16, float16)", field="model.dtype")
    return getattr(torch, _DTYPES[dtype])


def load_processor(name_or_path: str | Path):
    """The model's AutoProcessor (Qwen3VLProcessor for Qwen3-VL)."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as e:  # missing folder / files, or a folder that holds no known model
        raise DataError(f"cannot load the processor: {e}", file=str(name_or_path)) from e


def load_model(name_or_path: str | Path, dtype="auto", attn_implementation: str = "sdpa", device=None,
               adapter: str | Path | None = None):
    """(model, processor). `name_or_path`: hub id or folder; `adapter`: a PEFT LoRA folder applied on top
    (kept unmerged, so base and adapter scores can be compared). The model is returned in eval mode."""
    import torch
    from transformers import AutoModelForImageTextToText

    torch_dtype = resolve_dtype(dtype, device)
    try:
        model = AutoModelForImageTextToText.from_pretrained(str(name_or_path), dtype=torch_dtype,
                                                            attn_implementation=attn_implementation)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot load the model: {e}", file=str(name_or_path)) from e
    if adapter is not None:
        from peft import PeftModel

        if not (Path(adapter) / "adapter_config.json").is_file():
            raise DataError("not a PEFT adapter folder (no adapter_config.json)", file=str(adapter))
        model = PeftModel.from_pretrained(model, str(adapter))
    if device is not None:
        model = model.to(device)
    processor = load_processor(name_or_path)
    return model.eval(), processor
