"""A LoRA adapter folded into its base model: a plain Qwen3-VL folder (for servers without LoRA support)."""

from __future__ import annotations

from pathlib import Path

from cuelab.fsutil import atomic_dir
from cuelab.model.families import family_of
from cuelab.model.load import load_model, load_processor


def merge_adapter(base: str | Path, adapter: str | Path, out_dir: str | Path, dtype: str = "auto") -> Path:
    """Load `base` + `adapter`, merge the LoRA weights into the base weights, save model + processor to
    `out_dir` (written beside it and renamed: no half-written model on a crash)."""
    model, processor = load_model(base, dtype=dtype, adapter=adapter)
    merged = model.merge_and_unload()
    if (Path(adapter) / "tokenizer_config.json").is_file():  # the processor the adapter was trained with
        processor = load_processor(adapter)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        processor.save_pretrained(str(tmp))
        family_of(merged).serving_layout(tmp)
    return out_dir
