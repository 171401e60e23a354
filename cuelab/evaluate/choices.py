"""What scoring a question's choices gives, and the rule that turns it into an answer (no torch here: the vLLM
backend runs in its own venv and shares this with the transformers backend)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RULES = ("sum", "mean", "greedy")


def pick(scores: list[float], mean_scores: list[float], greedy_index: int | None, rule: str = "sum") -> int | None:
    """The answer under `rule`: `greedy` the constrained-decoding answer; `sum` / `mean` the highest summed /
    per-token log-likelihood (ties go to the earlier choice)."""
    if rule == "greedy":
        return greedy_index
    vals = scores if rule == "sum" else mean_scores
    return max(range(len(vals)), key=lambda i: (vals[i], -i))


def round_scores(xs):
    """Scores as prediction files store them (5 decimals); None stays None."""
    return [round(float(x), 5) for x in xs] if xs is not None else None


@dataclass
class ChoiceResult:
    scores: list[float]  # sum of log-probs of each choice's tokens + the end token
    mean_scores: list[float]  # the same divided by the token count
    n_tokens: list[int]
    greedy_index: int | None = None  # the greedy-constrained (vLLM grammar) answer
    greedy_tokens: list[int] | None = None
    first_logprobs: Any = field(default=None, repr=False)  # full-vocab log-probs (tensor) of the 1st answer token

    def choice(self, rule: str = "sum") -> int:
        if rule == "greedy" and self.greedy_index is None:
            raise ValueError("greedy rule requested but not computed")
        return pick(self.scores, self.mean_scores, self.greedy_index, rule)
