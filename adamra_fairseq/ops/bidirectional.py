"""Bidirectional kernel attention over pooled keys/values (encoder self- and cross-attention).

For one group of heads sharing a rate r:

    S = sum_j phi(kbar_j) vbar_j^T,   z = sum_j phi(kbar_j),
    o_t = phi(q_t)^T S / (phi(q_t)^T z + eps)

where kbar_j, vbar_j are means over blocks of r real tokens. Time and memory
are linear in the sequence length; S and z are accumulated in at least fp32.
"""

from typing import Optional, Tuple

import torch

from .feature_maps import FeatureMap, elu_plus_one
from .padding import gather_time, has_padding, left_align_order, real_lengths
from .pooling import block_means


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half/bfloat16/fp32 inputs, fp64 for fp64 inputs."""
    return torch.promote_types(dtype, torch.float32)


def kv_state(
    k: torch.Tensor,
    v: torch.Tensor,
    rate: int,
    key_padding_mask: Optional[torch.Tensor] = None,
    feature_map: FeatureMap = elu_plus_one,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Summary ``(S, z)`` of pooled keys/values.

    Args:
        k: ``(B, h, S, D)``; v: ``(B, h, S, Dv)``.
        key_padding_mask: ``(B, S)``, True = pad, or None.
    Returns:
        S ``(B, h, D, Dv)`` and z ``(B, h, D)`` in the accumulation dtype.
    """
    batch, _, seq_len, _ = k.shape
    lengths = real_lengths(key_padding_mask, batch, seq_len, k.device)
    if has_padding(key_padding_mask):
        order = left_align_order(key_padding_mask)
        k, v = gather_time(k, order), gather_time(v, order)
    acc = accumulation_dtype(k.dtype)
    k_mean, sizes = block_means(k.to(acc), lengths, rate)
    v_mean, _ = block_means(v.to(acc), lengths, rate)
    phi_k = feature_map(k_mean) * (sizes > 0)[:, None, :, None].to(acc)
    return phi_k.transpose(2, 3) @ v_mean, phi_k.sum(dim=2)


def attend_state(
    q: torch.Tensor,
    kv: torch.Tensor,
    k_sum: torch.Tensor,
    feature_map: FeatureMap = elu_plus_one,
    eps: float = 1e-6,
) -> torch.Tensor:
    """``phi(q) S / (phi(q) z + eps)`` for q ``(B, h, T, D)``; returns ``(B, h, T, Dv)`` in q's dtype."""
    phi_q = feature_map(q.to(kv.dtype))
    numerator = phi_q @ kv
    denominator = phi_q @ k_sum.unsqueeze(-1)
    return (numerator / (denominator + eps)).to(q.dtype)


def bidirectional_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rate: int,
    key_padding_mask: Optional[torch.Tensor] = None,
    feature_map: FeatureMap = elu_plus_one,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Non-causal AdaMRA attention of one rate group.

    q ``(B, h, T, D)``, k ``(B, h, S, D)``, v ``(B, h, S, Dv)``,
    key_padding_mask ``(B, S)`` (True = pad) -> ``(B, h, T, Dv)``.
    """
    kv, k_sum = kv_state(k, v, rate, key_padding_mask, feature_map)
    return attend_state(q, kv, k_sum, feature_map, eps)
