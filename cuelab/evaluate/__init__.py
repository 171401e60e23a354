"""Evaluation: choice scoring through transformers (hf.py) or vLLM (vllm.py), resumable prediction files
(predictions.py), the eval driver (run.py) and the statistics of the results table (metrics.py)."""
