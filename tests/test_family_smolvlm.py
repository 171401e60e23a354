"""SmolVLM2 (family `smolvlm`), what fits no table of tests/test_families.py: the processor's video layout (intro
line, one "Frame from mm:ss:" block per frame, no sub-images) and answers written after "Assistant:" with a
space."""

from cuelab.model.prompt import answer_token_ids, build_inputs
from tests.family_fixtures import QUESTIONS, sample, tiny


def test_prompt_has_the_processors_video_layout():
    t = tiny("smolvlm")
    frames = sample(t.fam, t.processor)
    inputs = build_inputs(t.processor, QUESTIONS[1], frames)
    text = t.processor.tokenizer.decode(inputs["input_ids"][0])
    frame = "<fake_token_around_image><global-img>" + "<image>" * 4 + "<fake_token_around_image>"
    stamps = [f"00:{int(s):02d}" for s in frames.timestamps]
    want = ("<|im_start|>User: You are provided the following series of eight frames from a 0:00:02 [H:MM:SS] "
            "video.\n" + "".join(f"\nFrame from {s}:{frame}" for s in stamps) + "\n\nWhat is the object in the "
            "red box?\nChoices:\n- red cube\n- blue ball\n- green cone\n- yellow star\nAnswer with one of the "
            "choices.<end_of_utterance>\nAssistant:")
    assert text == want  # whole frames only: no <row_i_col_j> sub-images


def test_answer_tokens_are_the_ones_the_template_writes():
    """The chat template writes an assistant answer as "Assistant: <answer>": the scored tokens are those."""
    processor = tiny("smolvlm").processor
    tok = processor.tokenizer
    for answer in ("red cube", "Lifting up", "3 balls"):
        turn = [{"role": "assistant", "content": [{"type": "text", "text": answer}]}]
        full = processor.apply_chat_template(turn, tokenize=False)
        assert full.endswith(f"Assistant: {answer}<end_of_utterance>\n")
        ids = tok(full, add_special_tokens=False)["input_ids"]
        want = answer_token_ids(processor, answer)
        assert ids[-1 - len(want):-1] == want and tok.decode(want[:-1]) == " " + answer
