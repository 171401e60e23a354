"""THE prompt builder: question record (+ sampled frames) -> chat messages -> processor inputs.

Training, both evaluation backends and attention analysis all call this module, so every stage sees the same
token layout. The user turn holds the video (unless blind) and the question with its four choices; the
assistant answers with the choice string itself, followed by `<|im_end|>`.
"""

from __future__ import annotations

from cuelab.errors import DataError

IGNORE_INDEX = -100
INSTRUCTION = "Answer with one of the choices."


def question_text(question: dict, hint: bool = False) -> str:
    """The text part of the user turn: optional hint, the question, the choices, the instruction."""
    for key in ("question", "choices"):
        if key not in question:
            raise DataError("question record lacks a field", video_id=question.get("video"), field=key)
    choices = question["choices"]
    if not isinstance(choices, list) or len(choices) < 2:
        raise DataError("choices must be a list of at least 2 strings", video_id=question.get("video"),
                        field="choices")
    lines = []
    if hint and question.get("hint"):
        lines.append(str(question["hint"]))
    lines.append(str(question["question"]))
    lines.append("Choices:")
    lines += [f"- {c}" for c in choices]
    lines.append(INSTRUCTION)
    return "\n".join(lines)


def build_messages(question: dict, with_video: bool, hint: bool = False, question_first: bool = False,
                   system_prompt: str | None = None) -> list[dict]:
    """Chat messages for `question`; the video (if any) goes before the text unless `question_first`."""
    text = {"type": "text", "text": question_text(question, hint)}
    content = [text]
    if with_video:
        content = [text, {"type": "video"}] if question_first else [{"type": "video"}, text]
    messages = []
    if system_prompt:
        messages.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    messages.append({"role": "user", "content": content})
    return messages


def prompt_text(processor, question: dict, with_video: bool, hint: bool = False, question_first: bool = False,
                system_prompt: str | None = None) -> str:
    """The chat-template string up to and including the assistant prefix (video still one `<|video_pad|>`)."""
    messages = build_messages(question, with_video, hint, question_first, system_prompt)
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _tokenizer(processor):
    return getattr(processor, "tokenizer", processor)


def end_token_id(processor) -> int:
    tok = _tokenizer(processor)
    tid = tok.convert_tokens_to_ids("<|im_end|>")
    if tid is None or tid == tok.unk_token_id:
        raise DataError("tokenizer has no <|im_end|> token")
    return int(tid)


def answer_token_ids(processor, answer: str, with_end: bool = True) -> list[int]:
    """Token ids of `answer` as it follows the assistant prefix (which ends with a newline, so the answer
    starts a fresh pre-token and tokenizes the same alone as in context), plus `<|im_end|>`."""
    ids = list(_tokenizer(processor)(str(answer), add_special_tokens=False)["input_ids"])
    return ids + [end_token_id(processor)] if with_end else ids


def choice_token_ids(processor, question: dict, with_end: bool = False) -> list[list[int]]:
    """Token ids of each choice as it follows the assistant prefix (with `<|im_end|>` if `with_end`)."""
    return [answer_token_ids(processor, c, with_end) for c in question["choices"]]


def build_inputs(processor, question: dict, frames=None, answer: str | None = None, hint: bool = False,
                 question_first: bool = False, system_prompt: str | None = None, device=None) -> dict:
    """Processor inputs for one question (batch of 1): input_ids, attention_mask, mm_token_type_ids and, with
    frames, pixel_values_videos and video_grid_thw. `frames` is a SampledFrames (already sized: no resize or
    resampling here) or None for the blind prompt; `device` (e.g. "cuda") runs the video processor's rescale,
    normalisation and patching there (pixel values come back on it). With `answer`, its tokens + `<|im_end|>` are appended,
    `labels` is -100 everywhere else, and `answer_start` is the index of the first answer token."""
    import torch

    text = prompt_text(processor, question, frames is not None, hint, question_first, system_prompt)
    if frames is None:
        out = processor(text=[text], return_tensors="pt")
    else:
        kwargs = {"device": str(device)} if device is not None else {}
        if hasattr(processor.video_processor, "cap_pixels_per_frame"):  # 5.x before 5.22: silence its warning
            kwargs["cap_pixels_per_frame"] = False  # (no effect: frames are not resized here)
        out = processor(text=[text], videos=[frames.frames], video_metadata=[frames.video_metadata()],
                        do_sample_frames=False, do_resize=False, return_tensors="pt", **kwargs)
    out = dict(out)
    out.pop("token_type_ids", None)
    n = out["input_ids"].shape[1]
    if "mm_token_type_ids" not in out:  # older processors: derive it (0 text, 2 video) for get_rope_index
        video_id = _tokenizer(processor).convert_tokens_to_ids("<|video_pad|>")
        out["mm_token_type_ids"] = (out["input_ids"] == video_id).long() * 2
    if answer is not None:
        ans = torch.tensor([answer_token_ids(processor, answer)], dtype=out["input_ids"].dtype)
        k = ans.shape[1]
        out["input_ids"] = torch.cat([out["input_ids"], ans], dim=1)
        out["attention_mask"] = torch.cat([out["attention_mask"], torch.ones_like(ans)], dim=1)
        out["mm_token_type_ids"] = torch.cat([out["mm_token_type_ids"],
                                              torch.zeros((1, k), dtype=out["mm_token_type_ids"].dtype)], dim=1)
        labels = torch.full_like(out["input_ids"], IGNORE_INDEX)
        labels[:, n:] = ans
        out["labels"] = labels
        out["answer_start"] = n
    return out
