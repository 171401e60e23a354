"""CPU speed-ups of the Qwen3-VL forward keep its maths: the patch embedding as a matmul."""

import torch

from cuelab.model.speed import linear_patch_embed
from cuelab.model.tiny import build_tiny, small_test_config


def test_linear_patch_embed_matches_the_conv3d_forward_and_backward():
    model, _ = build_tiny(small_test_config())
    embed = model.model.visual.patch_embed
    x = torch.randn(48, 3 * 2 * 16 * 16)
    ref = embed(x)
    ref.square().sum().backward()
    grad = embed.proj.weight.grad.clone()
    embed.proj.weight.grad = None
    assert linear_patch_embed(model) == 1
    out = embed(x)
    out.square().sum().backward()
    assert torch.allclose(out, ref, atol=1e-4) and torch.allclose(embed.proj.weight.grad, grad, atol=1e-3)
    assert set(model.state_dict()) == set(build_tiny(small_test_config())[0].state_dict())  # same weights saved


def test_a_wrapped_projection_keeps_its_own_forward():
    from peft import LoraConfig, get_peft_model

    model, _ = build_tiny(small_test_config())
    x = torch.randn(16, 3 * 2 * 16 * 16)
    ref = model.model.visual.patch_embed(x)
    linear_patch_embed(model)
    peft = get_peft_model(model, LoraConfig(r=2, target_modules=r"model\.visual\.patch_embed\.proj"))
    embed = peft.base_model.model.model.visual.patch_embed
    torch.nn.init.normal_(embed.proj.lora_B.default.weight)  # a non-zero adapter must change the output
    assert not torch.allclose(embed(x), ref, atol=1e-3)


def test_segments_of_equal_length_apart_are_gathered_into_one_call():
    """Windows of a frame (4 full, then an edge one, repeated) attend within themselves, as one call per segment
    would compute them."""
    import torch.nn.functional as F

    from cuelab.model.speed import _by_length

    torch.manual_seed(0)
    lengths = [4, 4, 2, 4, 4, 2, 3]
    q, k, v = (torch.randn(sum(lengths), 2, 8) for _ in range(3))
    got = _by_length(q, k, v, lengths, 0.5)
    want, a = [], 0
    for n in lengths:
        qs, ks, vs = (t[a:a + n].transpose(0, 1)[None] for t in (q, k, v))
        want.append(F.scaled_dot_product_attention(qs, ks, vs, scale=0.5)[0].transpose(0, 1).reshape(n, -1))
        a += n
    assert torch.allclose(got, torch.cat(want), atol=1e-6)
