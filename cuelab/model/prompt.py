"""THE prompt builder: question record (+ sampled frames) -> chat messages -> processor inputs.

Training, both evaluation backends and attention analysis all call this module, so every stage sees the same
token layout. The user turn holds the video (unless blind) and the question with its choices; the assistant
answers with the choice string itself, followed by `<|im_end|>`. Two text styles (`model.prompt`):
- `cuelab`: the question, the choices one per line, an instruction; target: answer + `<|im_end|>`;
- `first_study`: the first study's text verbatim (github 4g/visual_cues: `measure.py` sent it, `annotate.py`
  wrote it into the training JSON), the choices printed as a Python list, duplicates and all; target: answer +
  `<|im_end|>` + newline, the tokens its trainer's labels covered (qwenvl/data/data_processor.py: from two
  tokens after `assistant` to one past `<|im_end|>`, over the chat template's `...<|im_end|>\n`).
"""

from __future__ import annotations

from dataclasses import dataclass

from cuelab.errors import DataError
from cuelab.model.families import family_of

IGNORE_INDEX = -100
INSTRUCTION = "Answer with one of the choices."
# the study's instruction, byte for byte (no full stop after "choices"; a space before the newline)
STUDY_INSTRUCTION = ("Look at the video, and then fill in the blank accordingly from one of the given choices "
                     "Only output the correct answer. ")
STYLES = ("cuelab", "first_study")


@dataclass(frozen=True)
class PromptSpec:
    """How a question becomes a prompt: text style, hint line, question before the video, system message."""

    style: str = "cuelab"
    hint: bool = False
    question_first: bool = False
    system_prompt: str | None = None

    def __post_init__(self):
        if self.style not in STYLES:
            raise DataError(f"unknown prompt style {self.style!r} ({', '.join(STYLES)})", field="model.prompt")


def prompt_spec(cfg, hint: bool = False) -> PromptSpec:
    """The PromptSpec of an ExperimentConfig (`model.prompt`, `model.question_first`, `model.system_prompt`)."""
    m = cfg.model
    return PromptSpec(m.prompt, bool(hint), m.question_first, m.system_prompt)


def resolve_spec(spec: PromptSpec | None, hint: bool = False, question_first: bool = False,
                 system_prompt: str | None = None) -> PromptSpec:
    """`spec`, or the cuelab-style spec the separate keyword arguments describe (never both)."""
    if spec is None:
        return PromptSpec("cuelab", hint, question_first, system_prompt)
    if hint or question_first or system_prompt is not None:
        raise TypeError("give the prompt as spec= or as hint/question_first/system_prompt, not both")
    return spec


def _check_question(question: dict) -> list:
    for key in ("question", "choices"):
        if key not in question:
            raise DataError("question record lacks a field", video_id=question.get("video"), field=key)
    choices = question["choices"]
    if not isinstance(choices, list) or len(choices) < 2:
        raise DataError("choices must be a list of at least 2 strings", video_id=question.get("video"),
                        field="choices")
    return choices


def question_text(question: dict, spec: PromptSpec = PromptSpec()) -> str:
    """The text part of the user turn: optional hint, then the question and its choices in the spec's style."""
    choices = _check_question(question)
    lines = [str(question["hint"])] if spec.hint and question.get("hint") else []
    if spec.style == "first_study":  # measure.py / annotate.py: f"...\n{question}. \nChoices: {choices}"
        lines.append(f"{STUDY_INSTRUCTION}\n{question['question']}. \nChoices: {list(choices)}")
        return "\n".join(lines)
    lines.append(str(question["question"]))
    lines.append("Choices:")
    lines += [f"- {c}" for c in choices]
    lines.append(INSTRUCTION)
    return "\n".join(lines)


def build_messages(question: dict, with_video: bool, hint: bool = False, question_first: bool = False,
                   system_prompt: str | None = None, *, spec: PromptSpec | None = None) -> list[dict]:
    """Chat messages for `question`; the video (if any) goes before the text unless `question_first`."""
    spec = resolve_spec(spec, hint, question_first, system_prompt)
    text = {"type": "text", "text": question_text(question, spec)}
    content = [text]
    if with_video:
        content = [text, {"type": "video"}] if spec.question_first else [{"type": "video"}, text]
    messages = []
    if spec.system_prompt:
        messages.append({"role": "system", "content": [{"type": "text", "text": spec.system_prompt}]})
    messages.append({"role": "user", "content": content})
    return messages


def prompt_text(processor, question: dict, with_video: bool, hint: bool = False, question_first: bool = False,
                system_prompt: str | None = None, *, spec: PromptSpec | None = None) -> str:
    """The chat-template string up to and including the assistant prefix (video still one `<|video_pad|>`)."""
    messages = build_messages(question, with_video, spec=resolve_spec(spec, hint, question_first, system_prompt))
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _tokenizer(processor):
    return getattr(processor, "tokenizer", processor)


def end_token_id(processor) -> int:
    """The id of the model family's end-of-turn token (Qwen3-VL: `<|im_end|>`)."""
    tok = _tokenizer(processor)
    name = family_of(processor).end_token
    tid = tok.convert_tokens_to_ids(name)
    if tid is None or tid == tok.unk_token_id:
        raise DataError(f"tokenizer has no {name} token")
    return int(tid)


def answer_token_ids(processor, answer: str, with_end: bool = True) -> list[int]:
    """Token ids of `answer` as it follows the assistant prefix (which ends with a newline, so the answer
    starts a fresh pre-token and tokenizes the same alone as in context), plus `<|im_end|>`. A family whose
    template writes text before the answer (its `answer_prefix`, e.g. SmolVLM's space) gets it in front."""
    text = family_of(processor).answer_prefix + str(answer)
    ids = list(_tokenizer(processor)(text, add_special_tokens=False)["input_ids"])
    return ids + [end_token_id(processor)] if with_end else ids


def choice_token_ids(processor, question: dict, with_end: bool = False) -> list[list[int]]:
    """Token ids of each choice as it follows the assistant prefix (with `<|im_end|>` if `with_end`). Scoring
    uses choice + `<|im_end|>` in both styles: the first study's newline after the end token comes after the
    answer is over (decoding stops at `<|im_end|>`) and is the same for every choice."""
    return [answer_token_ids(processor, c, with_end) for c in question["choices"]]


def target_token_ids(processor, answer: str, spec: PromptSpec = PromptSpec()) -> list[int]:
    """The training target after the assistant prefix: answer + `<|im_end|>`, and under the first-study style
    the newline the chat template writes after it (its trainer's labels ran one token past `<|im_end|>`)."""
    ids = answer_token_ids(processor, answer)
    if spec.style == "first_study":  # after a special token "\n" starts a fresh pre-token: the same ids alone
        ids += list(_tokenizer(processor)("\n", add_special_tokens=False)["input_ids"])
    return ids


def build_inputs(processor, question: dict, frames=None, answer: str | None = None, hint: bool = False,
                 question_first: bool = False, system_prompt: str | None = None, device=None, *,
                 spec: PromptSpec | None = None) -> dict:
    """Processor inputs for one question (batch of 1): input_ids, attention_mask, mm_token_type_ids (families
    that use it) and, with frames, the family's pixel inputs (Qwen3-VL: pixel_values_videos, video_grid_thw). `frames` is a SampledFrames (already sized: no resize or
    resampling here) or None for the blind prompt; `device` (e.g. "cuda") runs the video processor's rescale,
    normalisation and patching there (pixel values come back on it). The prompt is `spec` (or the cuelab style
    with the separate keyword arguments). With `answer`, its target tokens (`target_token_ids`) are appended,
    `labels` is -100 everywhere else, and `answer_start` is the index of the first answer token."""
    import torch

    spec = resolve_spec(spec, hint, question_first, system_prompt)
    text = prompt_text(processor, question, frames is not None, spec=spec)
    if frames is None:
        out = processor(text=[text], return_tensors="pt")
    else:
        kwargs = family_of(processor).video_kwargs(processor, frames, device)
        out = processor(text=[text], videos=[frames.frames], return_tensors="pt", **kwargs)
    family = family_of(processor)
    out = family.processor_outputs(dict(out))
    n = out["input_ids"].shape[1]
    if family.uses_mm_token_type_ids and "mm_token_type_ids" not in out:
        # older processors: derive it (0 text, 2 video) for get_rope_index
        video_id = _tokenizer(processor).convert_tokens_to_ids(family.video_token)
        out["mm_token_type_ids"] = (out["input_ids"] == video_id).long() * 2
    if answer is not None:
        ans = torch.tensor([target_token_ids(processor, answer, spec)], dtype=out["input_ids"].dtype)
        k = ans.shape[1]
        out["input_ids"] = torch.cat([out["input_ids"], ans], dim=1)
        out["attention_mask"] = torch.cat([out["attention_mask"], torch.ones_like(ans)], dim=1)
        if "mm_token_type_ids" in out:
            out["mm_token_type_ids"] = torch.cat([out["mm_token_type_ids"],
                                                  torch.zeros((1, k), dtype=out["mm_token_type_ids"].dtype)], dim=1)
        labels = torch.full_like(out["input_ids"], IGNORE_INDEX)
        labels[:, n:] = ans
        out["labels"] = labels
        out["answer_start"] = n
    return out
