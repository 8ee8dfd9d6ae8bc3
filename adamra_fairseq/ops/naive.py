"""Naive AdaMRA reference: explicit slots and the full query-to-slot kernel matrix.

Slow (Python loops over rows, heads and queries) and written to be read
against the method description, not to be fast. Tests and benchmarks use it
as the oracle for the fast ops; the model never calls it.
"""

import math
from typing import List, Optional, Sequence

import torch

from .feature_maps import FeatureMap, elu_plus_one


def _slot_means(x: torch.Tensor, groups: List[torch.Tensor]) -> torch.Tensor:
    """Stack of ``x[positions].mean(0)`` for each group of positions: ``(len(groups), D)``."""
    return torch.stack([x[positions].mean(dim=0) for positions in groups])


def _kernel_read(phi_q: torch.Tensor, slot_k: torch.Tensor, slot_v: torch.Tensor, feature_map, eps, divide,
                 slot_scale=None):
    """Weights ``phi(q) phi(slot_k)^T`` (times ``slot_scale`` per slot) materialised, then the
    (normalised, if ``divide``) read of ``slot_v``."""
    weights = phi_q @ feature_map(slot_k).transpose(0, 1)
    if slot_scale is not None:
        weights = weights * slot_scale
    if not divide:
        return weights @ slot_v
    return (weights @ slot_v) / (weights.sum(dim=-1, keepdim=True) + eps)


def _softmax_rows(scores: torch.Tensor) -> torch.Tensor:
    weights = torch.exp(scores - scores.max(dim=-1, keepdim=True).values)
    return weights / weights.sum(dim=-1, keepdim=True)


def _memory_read(q: torch.Tensor, slot_k: torch.Tensor, slot_v: torch.Tensor, memory_queries: torch.Tensor):
    """One head: the real slots compressed into memory rows, then each query's softmax read of them."""
    compress = _softmax_rows(memory_queries @ slot_k.transpose(0, 1) / slot_k.size(1) ** 0.5)  # (L, M)
    memory_k, memory_v = compress @ slot_k, compress @ slot_v
    return _softmax_rows(q @ memory_k.transpose(0, 1)) @ memory_v


def naive_adamra_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    head_rates: Sequence[int],
    key_padding_mask: Optional[torch.Tensor] = None,
    causal: bool = False,
    feature_map: FeatureMap = elu_plus_one,
    eps: float = 1e-6,
    divide: bool = True,
    block_decay: Optional[Sequence[float]] = None,
    memory_queries: Optional[torch.Tensor] = None,
    max_blocks: Optional[int] = None,
) -> torch.Tensor:
    """Reference AdaMRA attention for all heads (no gate, no projections).

    Args:
        q: ``(B, H, T, D)``; k: ``(B, H, S, D)``; v: ``(B, H, S, Dv)``.
        head_rates: the rate of each of the H heads.
        key_padding_mask: ``(B, S)``, True = pad (pads never enter a mean).
        causal: query i attends like key position i (needs T == S); outputs at
            pad positions are 0.
        divide: divide each read by the sum of its weights (+ eps); else the raw weighted sum.
        block_decay: causal only: per head g, a complete block j weighs ``g^(b - j)`` from the
            query's block b (its own block weighs 1).
        memory_queries: bidirectional only: ``(H, L, D)``; each head compresses its blocks into
            L memory rows (softmax over blocks of ``u . kbar / sqrt(D)``) and the queries read
            them with a softmax of ``q . K`` (``--adamra-cross-memory``); ``feature_map``,
            ``eps`` and ``divide`` are then unused.
        max_blocks: bidirectional only: a row of n real tokens is cut into blocks of
            ``max(rate, ceil(n / max_blocks))`` tokens, whose means the queries read with a softmax
            of ``q . kbar`` (``--adamra-cross-blocks``); ``feature_map``, ``eps``, ``divide`` unused.
    Returns:
        ``(B, H, T, Dv)``.
    """
    batch, heads, tgt_len, _ = q.shape
    src_len = k.size(2)
    if causal and tgt_len != src_len:
        raise ValueError("causal attention needs as many queries as keys")
    out = q.new_zeros(batch, heads, tgt_len, v.size(-1))
    for row in range(batch):
        if key_padding_mask is None:
            real = torch.arange(src_len)
        else:
            real = torch.nonzero(~key_padding_mask[row].cpu()).flatten()
        for head in range(heads):
            rate = head_rates[head]
            if max_blocks is not None:
                rate = max(rate, math.ceil(len(real) / max_blocks))
            blocks = [real[start : start + rate] for start in range(0, len(real), rate)]
            k_row, v_row, q_row = k[row, head], v[row, head], q[row, head]
            if not causal:
                slot_k, slot_v = _slot_means(k_row, blocks), _slot_means(v_row, blocks)
                if memory_queries is not None:
                    out[row, head] = _memory_read(q_row, slot_k, slot_v, memory_queries[head])
                    continue
                if max_blocks is not None:
                    out[row, head] = _softmax_rows(q_row @ slot_k.transpose(0, 1)) @ slot_v
                    continue
                out[row, head] = _kernel_read(feature_map(q_row), slot_k, slot_v, feature_map, eps, divide)
                continue
            for index, position in enumerate(real.tolist()):
                own = index // rate
                slots = blocks[:own] + [real[own * rate : index + 1]]
                slot_k, slot_v = _slot_means(k_row, slots), _slot_means(v_row, slots)
                phi_q = feature_map(q_row[position : position + 1])
                scale = None
                if block_decay is not None:
                    scale = torch.tensor([float(block_decay[head]) ** (own - j) for j in range(own + 1)],
                                         dtype=q.dtype)
                out[row, head, position] = _kernel_read(phi_q, slot_k, slot_v, feature_map, eps, divide, scale)[0]
    return out
