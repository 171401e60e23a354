"""lmms-eval task functions of a benchmark exported by `cuelab export --format lmms-eval` (copied into the task
folder as utils.py; the task YAMLs name them as `!function utils.NAME`). Standalone: lmms-eval runs these without
cuelab installed, so any model lmms-eval knows can be evaluated on the exported benchmark.

Each document is one question under one condition (data/<condition>.jsonl): `prompt` is the text cuelab's prompt
builder wrote for it (question, choices one per line, instruction), `video` the cued video's path relative to
this folder (null under `blind`).

Two task families share these functions:
- log-likelihood tasks (`output_type: multiple_choice`): one request per choice, the choice string itself as the
  continuation; the answer is the choice with the lowest returned loss (lmms-eval's convention: models return
  the negative log-likelihood), ties to the earlier choice, as `cuelab eval`'s `sum` rule;
- generation tasks (`output_type: generate_until`): the generated text, stripped, must be one of the choices
  (cuelab's exact-match rule); failing that, a case-insensitive match without a closing full stop or quotes.

Per-sample results carry the score (0/1) and the video id, so lmms-eval's clustered standard error
(`cluster_key: video_id`) treats the questions of one video as correlated.
"""

from __future__ import annotations

import ast
from pathlib import Path

HERE = Path(__file__).resolve().parent


def doc_to_visual(doc):
    """The cued video of the document as an absolute path (none under `blind`)."""
    return [] if not doc.get("video") else [str(HERE / doc["video"])]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    """cuelab's prompt text, with a model's pre/post prompt from the YAML's lmms_eval_specific_kwargs if set."""
    kw = lmms_eval_specific_kwargs or {}
    return f"{kw.get('pre_prompt', '')}{doc['prompt']}{kw.get('post_prompt', '')}"


def doc_to_choice(doc):
    return [str(c) for c in doc["choices"]]


def doc_to_target(doc):
    return int(doc["answer_index"])


def _loss(resp):
    """The loss of one (loss, is_greedy) response. lmms-eval 0.7.3 hands it over as its str() ("(-3.2, False)"):
    its evaluator passes every response, log-likelihood ones too, through unwrap_generation_output, which turns
    what is not text into text; the tuple is read back."""
    if isinstance(resp, str):
        resp = ast.literal_eval(resp)
    return float(resp[0])


def process_results(doc, results):
    """Log-likelihood tasks: `results` holds one (loss, is_greedy) per choice."""
    losses = [_loss(r) for r in results]
    pick = min(range(len(losses)), key=lambda i: (losses[i], i))
    return {"acc": _sample(doc, pick)}


def match_choice(text, choices):
    """The position of the choice `text` names: exact after stripping (cuelab's rule), else case-insensitive
    without a closing full stop or quotes; -1 when it names none."""
    text = str(text).strip()
    if text in choices:
        return choices.index(text)
    loose = [c.strip().strip("\"'").rstrip(".").casefold() for c in choices]
    t = text.strip("\"'").rstrip(".").strip().casefold()
    return loose.index(t) if t in loose else -1


def process_generation(doc, results):
    """Generation tasks: `results` holds the generated text."""
    text = results[0] if results else ""
    text = text[0] if isinstance(text, list) else text
    return {"acc": _sample(doc, match_choice(text or "", doc_to_choice(doc)), text=text)}


def _sample(doc, pick, **extra):
    return {"score": float(pick == int(doc["answer_index"])), "video_id": str(doc["video_id"]),
            "question_id": str(doc["question_id"]), "condition": doc["condition"], "kind": doc.get("kind"),
            "choice_index": int(pick), **extra}


def aggregate_accuracy(items):
    """Accuracy over the per-sample dicts of process_results (or plain 0/1 numbers)."""
    scores = [float(x["score"]) if isinstance(x, dict) else float(x) for x in items]
    return sum(scores) / len(scores) if scores else float("nan")
