"""A LoRA adapter folded into its base model: a plain Qwen3-VL folder (for servers without LoRA support)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from cuelab.model.load import load_model, load_processor


def merge_adapter(base: str | Path, adapter: str | Path, out_dir: str | Path, dtype: str = "auto") -> Path:
    """Load `base` + `adapter`, merge the LoRA weights into the base weights, save model + processor to
    `out_dir` (written beside it and renamed: no half-written model on a crash)."""
    model, processor = load_model(base, dtype=dtype, adapter=adapter)
    merged = model.merge_and_unload()
    if (Path(adapter) / "tokenizer_config.json").is_file():  # the processor the adapter was trained with
        processor = load_processor(adapter)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    tmp.chmod(0o755)
    try:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        processor.save_pretrained(str(tmp))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
