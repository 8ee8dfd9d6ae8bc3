"""No NaN/inf in forward or backward: long inputs, extreme activations, nearly empty rows, bf16 autocast."""

import pytest
import torch

from adamra_fairseq.modules import MultiResolutionAttention
from adamra_fairseq.modules.options import AdaMRAOptions

EMBED, HEADS = 64, 8


def module(feature_map="elu", cross=False):
    torch.manual_seed(0)
    options = AdaMRAOptions(rates=(1, 2, 4, 8), routing="soft", balance_loss=0.0, feature_map=feature_map,
                            places=("encoder", "decoder", "cross"), chunk_size=64, eps=1e-6)
    if cross:
        return MultiResolutionAttention(EMBED, HEADS, options, encoder_decoder_attention=True)
    return MultiResolutionAttention(EMBED, HEADS, options, self_attention=True)


def future_mask(length):
    return torch.triu(torch.full((length, length), float("-inf")), 1)


def assert_finite_forward_backward(layer, x, **kwargs):
    x = x.detach().requires_grad_(True)
    out, _ = layer(x, x, x, **kwargs)
    assert torch.isfinite(out).all(), "non-finite output"
    out.float().square().mean().backward()
    assert torch.isfinite(x.grad).all(), "non-finite input gradient"
    for name, parameter in layer.named_parameters():
        assert torch.isfinite(parameter.grad).all(), f"non-finite gradient of {name}"
    layer.zero_grad(set_to_none=True)


@pytest.mark.parametrize("causal", [False, True])
def test_long_sequence_16384(causal):
    layer = module()
    x = torch.randn(16384, 1, EMBED)
    assert_finite_forward_backward(layer, x, attn_mask=future_mask(16384) if causal else None)


@pytest.mark.parametrize("scale", [1e2, 1e4])
@pytest.mark.parametrize("feature_map", ["elu", "relu"])
@pytest.mark.parametrize("causal", [False, True])
def test_large_activations(scale, feature_map, causal):
    layer = module(feature_map)
    x = torch.randn(300, 2, EMBED) * scale
    assert_finite_forward_backward(layer, x, attn_mask=future_mask(300) if causal else None)


def test_all_pad_but_one_token_and_single_token_sentences():
    layer = module()
    x = torch.randn(40, 3, EMBED)
    mask = torch.ones(3, 40, dtype=torch.bool)
    mask[0, -1] = False  # one real token, left-padded
    mask[1, 0] = False  # one real token, right-padded
    mask[2, :] = False
    assert_finite_forward_backward(layer, x, key_padding_mask=mask)
    single = torch.randn(1, 2, EMBED)
    assert_finite_forward_backward(layer, single)
    assert_finite_forward_backward(layer, single, attn_mask=future_mask(1))


def test_relu_with_all_zero_features_falls_back_to_eps():
    """relu features can all be 0; the normaliser's eps keeps the output finite (and 0)."""
    layer = module("relu")
    with torch.no_grad():
        layer.k_proj.weight.zero_()
        layer.k_proj.bias.fill_(-1.0)  # every key feature is relu(-1) = 0
    x = torch.randn(20, 2, EMBED)
    assert_finite_forward_backward(layer, x)


@pytest.mark.parametrize("causal", [False, True])
def test_bf16_autocast_keeps_states_in_fp32(causal):
    layer = module()
    x = torch.randn(4096, 1, EMBED)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert_finite_forward_backward(layer, x * 50, attn_mask=future_mask(4096) if causal else None)
        out, _ = layer(x, x, x, attn_mask=future_mask(4096) if causal else None)
    reference, _ = layer(x, x, x, attn_mask=future_mask(4096) if causal else None)
    relative = (out.float() - reference).norm() / reference.norm()
    assert relative < 0.05


def test_incremental_states_are_fp32_under_low_precision():
    layer = module().to(torch.bfloat16)
    state = {}
    x = torch.randn(1, 2, EMBED, dtype=torch.bfloat16)
    for _ in range(3):  # a few steps, so that complete blocks are stored
        layer(x, x, x, incremental_state=state)
    buffer = layer._get_input_buffer(state)
    assert buffer["position"].dtype == torch.long and any(name.startswith("features") for name in buffer)
    assert all(tensor.dtype == torch.float32 for name, tensor in buffer.items() if name != "position")
    cross = module(cross=True).to(torch.bfloat16)
    cross_state = {}
    source = torch.randn(9, 2, EMBED, dtype=torch.bfloat16)
    cross(x, source, source, incremental_state=cross_state, static_kv=True)
    cached = cross._get_input_buffer(cross_state)
    assert cached and all(tensor.dtype == torch.float32 for tensor in cached.values() if tensor is not None)
