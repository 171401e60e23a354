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
