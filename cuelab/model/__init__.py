"""Qwen3-VL loading, the tiny model, the one prompt builder, and LoRA / full training."""
