"""Model families: each registered family is found from its model, config, processor and tokenizer, its pieces
agree with the model's own forward (scores, grid, attention, vision speed-ups), its LoRA trains and reloads and its
saved folder round-trips through the Auto classes (rows: one per family; a new family adds its row by registering
and its FamilyCase in tests/family_fixtures.py). A family's facts (geometry, processor keys, prompt layout, real
architecture sizes) are rows of the tables below; what fits no table is in tests/test_family_<name>.py.

Qwen3-VL is left out of a row where tests/test_eval_hf.py or tests/test_train.py already asserts the same of it
(QWEN3_ELSEWHERE)."""

import copy
import re

import numpy as np
import pytest
import torch

from cuelab.errors import DataError
from cuelab.evaluate.hf import HFScorer, VisionCache, reference_scores
from cuelab.model.families import FAMILIES, family_of, get_family
from cuelab.model.prompt import PromptSpec, build_inputs, prompt_text
from cuelab.model.tiny import small_test_config
from tests.family_fixtures import CASES, QUESTIONS, family_params, max_diff, tiny

FAMILY = family_params()
#: tests of Qwen3-VL elsewhere: fast scores per prompt layout and several videos at once (test_eval_hf.py),
#: LoRA loss and adapter reload (test_train.py), constrained greedy answers (test_eval_hf.py)
QWEN3_ELSEWHERE = ("qwen3_vl",)


def test_every_family_has_its_case():
    assert sorted(CASES) == sorted(FAMILIES)


# -- found by name, model, config, processor, tokenizer -------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILY)
def test_family_is_found_from_model_config_processor_and_tokenizer(family):
    t = tiny(family)
    fam, model, processor = t.fam, t.model, t.processor
    assert family_of(model) is fam
    assert family_of(model.config.to_dict()) is fam
    assert family_of(processor) is fam
    by_tokenizer = family_of(processor.tokenizer)  # a tokenizer may be shared by families: its tokens must agree
    assert (by_tokenizer.end_token, by_tokenizer.video_token) == (fam.end_token, fam.video_token)
    if t.case.tokenizer_names_family:  # its video token tells it (SmolVLM2's vocabulary also holds `<|im_end|>`)
        assert by_tokenizer is fam
    assert family_of(fam.name) is fam


@pytest.mark.parametrize("obj", ["llama", {"model_type": "bert"}])
def test_unknown_family_names_the_field(obj):
    with pytest.raises(DataError, match="model family") as e:
        family_of(obj)
    assert e.value.field == "model.family"


@pytest.mark.parametrize("family", FAMILY)
def test_check_names_a_family_that_does_not_match_the_checkpoint(family):
    from cuelab.pipeline import check_model

    t = tiny(family)
    assert check_model(str(t.folder), family) == []
    other = next(f for f in FAMILIES if t.model.config.model_type not in FAMILIES[f].model_types)
    problems = check_model(str(t.folder), other)
    assert len(problems) == 1 and problems[0].startswith(f"model.family: {other} does not match")


# -- geometry, processor outputs, video grid ------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILY)
def test_geometry_inputs_and_video_token(family):
    t = tiny(family)
    g = t.fam.geometry(t.processor)
    assert (g.patch, g.merge, g.temporal_patch, g.size) == t.case.geometry
    assert g.factor == g.patch * g.merge
    inputs = build_inputs(t.processor, QUESTIONS[1], t.frames())
    assert set(inputs) == t.case.input_keys
    assert t.fam.video_token == t.case.video_token == t.processor.tokenizer.convert_ids_to_tokens(
        t.fam.video_token_id(t.model))


@pytest.mark.parametrize("family,key,shape", [
    pytest.param("llava_onevision", "pixel_values_videos", (1, 8, 3, 84, 84), id="llava_onevision"),
    pytest.param("smolvlm", "pixel_values", (1, 8, 3, 64, 64), id="smolvlm")])
def test_video_pixels_are_whole_frames_at_the_fixed_size(family, key, shape):
    t = tiny(family)
    frames = t.frames()
    assert frames.n == shape[1]
    assert tuple(build_inputs(t.processor, QUESTIONS[1], frames)[key].shape) == shape


@pytest.mark.parametrize("family", FAMILY)
def test_video_grid_covers_every_video_token(family):
    t = tiny(family)
    fam, model, case = t.fam, t.model, t.case
    frames = t.frames()
    inputs = build_inputs(t.processor, QUESTIONS[0], frames)
    grid = fam.video_grid(inputs, t.processor)
    video = np.flatnonzero(inputs["input_ids"][0].numpy() == fam.video_token_id(model))
    cells = fam.grid_positions(inputs["input_ids"], model)
    assert (grid.t, grid.h, grid.w) == case.grid_thw and frames.n == 8
    assert grid.n_tokens == len(cells) == len(video) - case.outside_grid
    assert np.array_equal(cells, video[:len(cells)])  # the cells are the video tokens, the grid's extras after
    assert grid.cell_px * grid.w == frames.resized_width and grid.cell_px * grid.h == frames.resized_height
    tp = case.geometry[2]
    assert all(grid.frames_of(k) == list(range(k * tp, (k + 1) * tp)) for k in range(grid.t))


@pytest.mark.parametrize("family,exc,match,fields", [
    pytest.param("internvl", DataError, "the model sees 112x112", {"video_id": "v0", "field": "frames.size"},
                 id="internvl"),
    pytest.param("smolvlm", ValueError, "v0", {}, id="smolvlm")])
def test_frames_of_another_size_are_refused(family, exc, match, fields):
    """The tower needs the processor's size: frames of another are an error naming the video, never silently
    resized or misplaced."""
    t = tiny(family)
    with pytest.raises(exc, match=match) as e:
        build_inputs(t.processor, QUESTIONS[0], t.frames(fixed_size=False))
    assert {k: getattr(e.value, k) for k in fields} == fields


# -- the prompt through the family's chat template ------------------------------------------------------------------
_LLAVA_USER = "<|im_start|>user\n<video>\nWhat is the object in the red box?\nChoices:\n"
_QWEN25_USER = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                "<|vision_start|><|video_pad|><|vision_end|>What is the object in the red box?\nChoices:\n")
_OWN_SYSTEM = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is"  # no default system turn
_ANSWER_TURN = "Answer with one of the choices.<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize("family,video,spec,start,end", [
    pytest.param("internvl", True, PromptSpec(),
                 "<|im_start|>user\n<video>\nWhat is the object in the red box?\nChoices:\n- red cube\n- blue ball\n"
                 "- green cone\n- yellow star\n" + _ANSWER_TURN, None, id="internvl-whole"),
    pytest.param("llava_onevision", True, PromptSpec(), _LLAVA_USER, _ANSWER_TURN, id="llava_onevision"),
    pytest.param("llava_onevision", False, PromptSpec(system_prompt="Be brief."), _OWN_SYSTEM, "",
                 id="llava_onevision-system"),
    pytest.param("qwen2_5_vl", True, PromptSpec(), _QWEN25_USER, "<|im_end|>\n<|im_start|>assistant\n",
                 id="qwen2_5_vl-default-system"),
    pytest.param("qwen2_5_vl", False, PromptSpec(system_prompt="Be brief."), _OWN_SYSTEM, "",
                 id="qwen2_5_vl-system"),
    pytest.param("smolvlm", False, PromptSpec(), "<|im_start|>User: What is the object", "", id="smolvlm-blind")])
def test_prompt_has_the_real_checkpoints_layout(family, video, spec, start, end):
    """`end` None: `start` is the whole prompt."""
    text = prompt_text(tiny(family).processor, QUESTIONS[1], video, spec=spec)
    if end is None:
        assert text == start
    else:
        assert text.startswith(start) and text.endswith(end)


def test_llava_onevision_template_renders_videos_before_text():
    """The template renders a turn's videos before its text, whatever their order in the message."""
    processor = tiny("llava_onevision").processor
    assert prompt_text(processor, QUESTIONS[1], True, spec=PromptSpec(question_first=True)) == prompt_text(
        processor, QUESTIONS[1], True)


# -- scores ---------------------------------------------------------------------------------------------------------
_SPECS = [("plain", PromptSpec(), False, False), ("hint", PromptSpec(hint=True), False, False),
          ("question_first", PromptSpec(question_first=True), False, False), ("blind", PromptSpec(), True, False),
          ("pack", PromptSpec(), False, True), ("question_first-pack", PromptSpec(question_first=True), False, True),
          ("first_study", PromptSpec(style="first_study"), False, False),
          ("system", PromptSpec(system_prompt="Be brief."), False, False)]
_QWEN3_SPECS = ("plain", "system")  # the others: test_eval_hf.py


@pytest.mark.parametrize("family,spec,blind,pack", [
    pytest.param(f, spec, blind, pack, id=f"{f}-{sid}") for f in sorted(FAMILIES) for sid, spec, blind, pack in _SPECS
    if f not in QWEN3_ELSEWHERE or sid in _QWEN3_SPECS])
def test_fast_scores_equal_one_forward_per_choice(family, spec, blind, pack):
    t = tiny(family)
    frames = None if blind else t.frames()
    scorer = HFScorer(t.model, t.processor, spec=spec, pack_choices=pack)
    results = scorer.score(scorer.prepare(QUESTIONS, frames, hint=spec.hint))
    for q, fast in zip(QUESTIONS, results):
        assert max_diff(fast, t.reference(q, frames, spec)) <= 1e-4
    assert results[0].scores != results[1].scores  # not vacuous


@pytest.mark.parametrize("family", family_params(skip=QWEN3_ELSEWHERE))
def test_several_videos_at_once_score_as_the_reference(family):
    """score_many: videos of different frame counts (fixed-size families) or sizes, a blind one, one vision call;
    each row reads its own video's prefix."""
    t = tiny(family)
    other = {"n": 4} if t.case.geometry[3] else {"h": 32}
    videos = [(t.frames(), QUESTIONS), (t.frames(seed=2), QUESTIONS[:1]), (None, QUESTIONS),
              (t.frames(seed=3, **other), QUESTIONS[1:])]
    scorer = HFScorer(t.model, t.processor, vision_cache=VisionCache(size=8))
    many = scorer.score_many([scorer.prepare(qs, fr) for fr, qs in videos], [("a",), ("b",), None, ("d",)])
    for (fr, qs), results in zip(videos, many):
        for q, fast in zip(qs, results):
            assert max_diff(fast, t.reference(q, fr)) <= 1e-4
    assert max(abs(a - b) for a, b in zip(many[0][0].scores, many[1][0].scores)) > 1e-3


@pytest.mark.parametrize("family", family_params(skip=QWEN3_ELSEWHERE))
def test_greedy_answers_are_choices_written_as_the_template_writes_them(family):
    t = tiny(family)
    scorer = HFScorer(t.model, t.processor)
    results = scorer.score(scorer.prepare(QUESTIONS, t.frames()), greedy=True)
    for q, r in zip(QUESTIONS, results):
        assert r.greedy_index is not None and r.greedy_tokens[-1] == scorer.end_id
        assert t.processor.tokenizer.decode(r.greedy_tokens[:-1]) == t.fam.answer_prefix + q["choices"][
            r.greedy_index]


# -- vision features ------------------------------------------------------------------------------------------------
def _llava_own(model, p):
    return model.model.get_video_features(p["pixel_values_videos"], return_dict=True).pooler_output[0]


def _smolvlm_own(model, p):
    return model.model.get_image_features(p["pixel_values"], p["pixel_attention_mask"],
                                          return_dict=True).pooler_output[0]


@pytest.mark.parametrize("family,own,tokens_per_frame", [
    pytest.param("llava_onevision", _llava_own, None, id="llava_onevision"),
    pytest.param("smolvlm", _smolvlm_own, 4, id="smolvlm")])
def test_video_features_are_the_models_own_in_scatter_order(family, own, tokens_per_frame):
    """Two videos through one tower call give, per video, what the model's own feature function gives of that
    video alone (LLaVA-OneVision: the frames' pooled tokens, then image_newline)."""
    t = tiny(family)
    model = t.model
    pix = [t.fam.video_pixels(build_inputs(t.processor, QUESTIONS[0], t.frames(seed=s, n=n)),
                              torch.float32) for s, n in ((0, 8), (1, 4))]
    feats = t.fam.video_features(model, pix, "cpu")
    with torch.no_grad():
        for p, f in zip(pix, feats):
            want = own(model, p)
            assert f.extras == [] and f.embeds.shape == want.shape
            assert torch.allclose(f.embeds, want, atol=1e-5)
            if family == "llava_onevision":
                assert torch.equal(f.embeds[-1], model.model.image_newline)
            if tokens_per_frame:
                assert want.shape == (p["pixel_values"].shape[1] * tokens_per_frame, 64)


@pytest.mark.parametrize("family", FAMILY)
def test_speedups_keep_the_vision_features(family):
    """Each family's maths-preserving speed-ups (batched vision attention, ...) give the features of its own
    forward: frames wide enough for several vision windows and frame pairs."""
    t = tiny(family)
    fam, model, processor = t.fam, t.model, t.processor
    frames = t.frames(seed=1, h=120, w=240)
    pixels = fam.video_pixels(build_inputs(processor, QUESTIONS[1], frames), torch.float32)
    fast = copy.deepcopy(model)
    fam.speedups(fast)
    with torch.no_grad():
        ref, got = fam.video_features(model, [pixels], "cpu")[0], fam.video_features(fast, [pixels], "cpu")[0]
    assert torch.allclose(ref.embeds, got.embeds, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ref.extras, got.extras))
    if family in ("llava_onevision", "smolvlm"):  # SigLIP-style patch embeddings: row-major after the speed-ups
        layouts = []
        for m in fast.modules():
            if type(m).__name__.endswith("VisionEmbeddings"):
                m.register_forward_hook(lambda _m, _a, out: layouts.append(out.is_contiguous()))
        with torch.no_grad():
            fam.video_features(fast, [pixels], "cpu")
        assert layouts == [True]


BLOCKS = {"qwen3_vl": lambda m: m.model.visual.blocks, "qwen2_5_vl": lambda m: m.model.visual.blocks,
          "llava_onevision": lambda m: m.model.vision_tower.encoder.layers,
          "internvl": lambda m: m.model.vision_tower.encoder.layer,
          "smolvlm": lambda m: m.model.vision_model.encoder.layers}


@pytest.mark.parametrize("family", FAMILY)
def test_compile_covers_each_llm_layer_and_vision_block_once(family):
    """The generic compile (benchmarks/families_gpu.py --compile): every family's LLM MLPs/norms and vision blocks
    compiled, each once, the model it was not called on untouched."""
    from cuelab.model.speed import compile_family_pieces

    t = tiny(family)
    model = copy.deepcopy(t.model)
    n = compile_family_pieces(model, t.fam)
    layers = t.fam.language_model(model).layers
    pieces = [layer.mlp for layer in layers] + [layer.input_layernorm for layer in layers] + list(BLOCKS[family](model))
    assert all(p._compiled_call_impl is not None for p in pieces)
    assert n >= len(pieces) and compile_family_pieces(model, t.fam) == 0
    assert all(getattr(layer.mlp, "_compiled_call_impl", None) is None for layer in t.fam.language_model(t.model).layers)


# -- attention ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILY)
def test_attention_to_video_covers_the_grid(family):
    from cuelab.attention.collect import attention_to_video

    t = tiny(family)
    fam, model = t.fam, t.model
    frames = t.frames()
    inputs = build_inputs(t.processor, QUESTIONS[0], frames)
    rows, mass, pos = attention_to_video(model, inputs, fam.video_token_id(model))
    grid = fam.video_grid(inputs, t.processor)
    cells = fam.grid_positions(inputs["input_ids"], model)
    pos = np.asarray(pos).reshape(-1)
    assert len(cells) == grid.n_tokens == len(pos) - t.case.outside_grid
    assert np.array_equal(pos[:grid.n_tokens], cells)
    assert rows.shape == (model.config.text_config.num_hidden_layers, len(pos))
    assert grid.cell_px * grid.w == frames.resized_width and grid.cell_px * grid.h == frames.resized_height
    assert np.all(mass > 0) and np.all(mass < 1)


# -- training -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILY)
def test_lora_layers_pattern_matches_only_the_language_model(family):
    fam, model = tiny(family).fam, tiny(family).model
    names = [n for n, _ in model.named_modules()]
    lm = [n for n in names if re.match(fam.lm_layer_prefix, n)]
    assert lm and all("visual" not in n and "vision" not in n for n in lm)
    assert any(n.endswith("q_proj") for n in lm)


@pytest.mark.parametrize("family", family_params(skip=QWEN3_ELSEWHERE))
def test_lora_trains_and_the_adapter_reloads(family, tmp_path):
    """LoRA on the language model only: the loss falls in six steps, and the saved adapter on the saved base
    folder scores as the trained model."""
    from cuelab.config import TrainConfig
    from cuelab.model.load import load_model
    from cuelab.model.train import prepare_model

    t = tiny(family)
    processor, frames = t.processor, t.frames()
    model, groups = prepare_model(copy.deepcopy(t.model).train(), TrainConfig(rank=8, alpha=16, dropout=0.0), "cpu")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and re.search(t.fam.lm_layer_prefix, n) for n in trainable)
    assert all("vision" not in n for n in trainable)
    opt = torch.optim.AdamW(groups, lr=1e-2)
    batch = {k: v for k, v in build_inputs(processor, QUESTIONS[1], frames, answer="red cube").items()
             if k != "answer_start"}
    losses = []
    for _ in range(6):
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    model.eval().save_pretrained(tmp_path / "adapter")
    reloaded, proc2 = load_model(t.folder, dtype="float32", adapter=tmp_path / "adapter")
    with torch.no_grad():
        want = reference_scores(model, processor, QUESTIONS[1], frames)
    scorer = HFScorer(reloaded, proc2)
    assert max_diff(scorer.score(scorer.prepare([QUESTIONS[1]], frames))[0], want) <= 1e-4


# -- the saved folder -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILY)
def test_tiny_folder_reloads_through_the_auto_classes(family):
    """build_tiny_model's folder through AutoModelForImageTextToText / AutoProcessor: the family's classes, the
    built weights (a second build from the same seed), the same prompts, pixels and scores."""
    t = tiny(family)
    model2, proc2 = t.reloaded
    assert (type(model2).__name__, type(proc2).__name__, type(proc2.video_processor).__name__) == (
        t.case.model_class, t.case.processor_class, t.case.video_processor_class)
    for obj in (model2, model2.config.to_dict(), proc2):
        assert family_of(obj) is t.fam
    by_tokenizer = family_of(proc2.tokenizer)
    assert (by_tokenizer.end_token, by_tokenizer.video_token) == (t.fam.end_token, t.fam.video_token)
    assert t.fam.geometry(proc2) == t.fam.geometry(t.processor)
    built, loaded = t.model.state_dict(), model2.state_dict()
    assert built.keys() == loaded.keys() and all(torch.equal(v, loaded[k]) for k, v in built.items())
    frames = t.frames()
    assert prompt_text(proc2, QUESTIONS[0], True) == prompt_text(t.processor, QUESTIONS[0], True)
    a, b = build_inputs(t.processor, QUESTIONS[0], frames), build_inputs(proc2, QUESTIONS[0], frames)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))
    s1, s2 = HFScorer(t.model, t.processor), HFScorer(model2, proc2)
    for x, y in zip(s1.score(s1.prepare(QUESTIONS, frames)), s2.score(s2.prepare(QUESTIONS, frames))):
        assert max_diff(x, y) <= 1e-5


_HI = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "hi"}]}]


@pytest.mark.parametrize("family,path,want", [
    pytest.param("internvl", "tokenizer.context_image_token", "<IMG_CONTEXT>", id="internvl-context"),
    pytest.param("internvl", "tokenizer.start_image_token", "<img>", id="internvl-start"),
    pytest.param("internvl", "tokenizer.video_token", "<video>", id="internvl-video"),
    pytest.param("internvl", "image_seq_length", 16, id="internvl-seq"),
    pytest.param("internvl", "chat(hi)", "<|im_start|>user\n<video>\nhi<|im_end|>\n<|im_start|>assistant\n",
                 id="internvl-chat"),
    pytest.param("qwen2_5_vl", "video_processor.patch_size", 14, id="qwen2_5_vl-patch"),
    pytest.param("qwen2_5_vl", "tokenizer.eos_token", "<|im_end|>", id="qwen2_5_vl-eos"),
    pytest.param("qwen2_5_vl", "chat(hi)", "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                 "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>hi<|im_end|>\n<|im_start|>assistant\n",
                 id="qwen2_5_vl-chat")])
def test_saved_processor_facts(family, path, want):
    """The reloaded processor's tokens, sizes and chat template (`chat(hi)`: a video and "hi", as the real
    checkpoints' templates render them)."""
    proc = tiny(family).reloaded[1]
    if path == "chat(hi)":
        got = proc.apply_chat_template(_HI, tokenize=False, add_generation_prompt=True)
    else:
        got = proc
        for part in path.split("."):
            got = getattr(got, part)
    assert got == want


@pytest.mark.parametrize("family", FAMILY)
def test_build_tiny_is_deterministic_and_takes_the_demo_size(family):
    from cuelab.config import TinyModelConfig

    fam, case = get_family(family), CASES[family]
    a, _ = fam.build_tiny(small_test_config(seed=3))
    b, _ = fam.build_tiny(small_test_config(seed=3))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    demo, proc = fam.build_tiny(TinyModelConfig())
    cfg = demo.config
    assert (cfg.text_config.hidden_size, cfg.vision_config.hidden_size) == (128, 64)
    if case.demo_image_size is not None:
        assert cfg.vision_config.image_size == case.demo_image_size
    assert len(proc.tokenizer) <= cfg.text_config.vocab_size


# -- real architecture sizes ----------------------------------------------------------------------------------------
def _preset_rows():
    from cuelab.model.families.llava_onevision import PRESETS as LLAVA

    ivl = {"text_config.model_type": "qwen2", "text_config.vocab_size": 151674, "vision_config.hidden_size": 1024,
           "vision_config.num_hidden_layers": 24, "vision_config.image_size": [448, 448],
           "vision_config.patch_size": [14, 14], "image_token_id": 151667,
           "image_seq_length": 256}  # (448 // 14 // 2) ** 2
    llava = {"vision_config.image_size": 384, "vision_config.patch_size": 14, "vision_config.num_hidden_layers": 26,
             "vision_config.hidden_size": 1152, "video_token_id": 151647, "image_token_id": 151646,
             "vision_feature_select_strategy": "full"}
    qwen = {"text_config.rope_parameters.mrope_section": [16, 24, 24], "vision_config.depth": 32,
            "vision_config.hidden_size": 1280, "vision_config.tokens_per_second": 2,
            "vision_config.fullatt_block_indexes": [7, 15, 23, 31], "video_token_id": 151656}
    smol = {"text_config.vocab_size": 49280, "image_token_id": 49190}

    def text(hidden, layers, **more):
        return {"text_config.hidden_size": hidden, "text_config.num_hidden_layers": layers,
                **{f"text_config.{k}": v for k, v in more.items()}}

    rows = [("internvl", "internvl3-1b", {**ivl, **text(896, 24, num_attention_heads=14, num_key_value_heads=2),
                                          "tie_word_embeddings": True}),
            ("internvl", "internvl3-2b", {**ivl, **text(1536, 28, num_attention_heads=12, num_key_value_heads=2),
                                          "tie_word_embeddings": True}),
            ("internvl", "internvl3-8b", {**ivl, **text(3584, 28, num_attention_heads=28, num_key_value_heads=4),
                                          "tie_word_embeddings": False})]
    rows += [("llava_onevision", name, {**llava, **text(hidden, layers, vocab_size=vocab),
                                        "tie_word_embeddings": LLAVA[name]["tie_word_embeddings"]})
             for name, layers, hidden, vocab in [("llava-onevision-0.5b", 24, 896, 152000),
                                                 ("llava-onevision-7b", 28, 3584, 152128)]]
    rows += [("qwen2_5_vl", name, {**qwen, **text(hidden, layers, num_key_value_heads=kv, vocab_size=vocab),
                                   "vision_config.out_hidden_size": hidden, "tie_word_embeddings": tied})
             for name, hidden, layers, kv, vocab, tied in [("qwen2.5-vl-3b", 2048, 36, 2, 151936, True),
                                                           ("qwen2.5-vl-7b", 3584, 28, 4, 152064, False)]]
    rows += [("smolvlm", name, {**smol, **text(hidden, layers), "vision_config.image_size": side,
                                "vision_config.patch_size": patch, "scale_factor": scale})
             for name, layers, hidden, side, patch, scale in [("smolvlm2-2.2b", 24, 2048, 384, 14, 3),
                                                              ("smolvlm2-500m", 32, 960, 512, 16, 4)]]
    return [pytest.param(f, name, want, id=name) for f, name, want in rows]


def _get(obj, path: str):
    for part in path.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return list(obj) if isinstance(obj, tuple) else obj


@pytest.mark.parametrize("family,preset,want", _preset_rows())
def test_presets_have_the_real_architecture(family, preset, want):
    import importlib

    cfg = importlib.import_module(f"cuelab.model.families.{family}").preset_config(preset)
    assert {k: _get(cfg, k) for k in want} == want


@pytest.mark.parametrize("family,preset,image_tokens", [
    pytest.param("llava_onevision", "llava-onevision-0.5b", None, id="llava-onevision-0.5b"),
    pytest.param("llava_onevision", "llava-onevision-7b", None, id="llava-onevision-7b"),
    pytest.param("smolvlm", "smolvlm2-2.2b", 81, id="smolvlm2-2.2b"),
    pytest.param("smolvlm", "smolvlm2-500m", 64, id="smolvlm2-500m")])
def test_real_size_model_builds_on_meta(family, preset, image_tokens):
    """Shapes only (device meta: no memory): the family's class, and SmolVLM2's tokens per frame (the patches
    of a side, pooled by scale_factor on each axis)."""
    model = get_family(family).random_model(preset, device="meta")
    assert type(model).__name__ == CASES[family].model_class
    if image_tokens is not None:
        cfg = model.config
        pooled = (cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2 // cfg.scale_factor ** 2
        assert model.model.image_seq_len == pooled == image_tokens
