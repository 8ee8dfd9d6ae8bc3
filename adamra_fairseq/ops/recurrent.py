"""One step of causal AdaMRA attention for incremental decoding.

Per head the state holds the complete blocks as ``[S | z]`` (``(F, Dv + 1)``,
see ``bidirectional.with_ones``), kept as a scale times a matrix so that a
decay multiplies only the scale, and the open block's running sums of k and
of ``[v, 1]`` (whose last entry counts its tokens). A step adds the new token
to the running sums, reads ``phi(q)`` against the complete blocks plus the
open block's means, and folds the open block into ``[S | z]`` once it holds r
tokens. Work and memory per step are O(H * D * Dv) at every position.

The state is a dict of tensors whose first dimension is the batch (x beam)
axis, so beam search can reorder it with ``index_select(0, new_order)``.
"""

from typing import Dict, Optional

import torch

from .bidirectional import accumulation_dtype, normalise, with_ones
from .feature_maps import FeatureMap, elu_plus_one

State = Dict[str, torch.Tensor]
# A decayed state keeps [S | z] as scale * matrix; once a scale falls below this, it is folded into the
# matrix (the matrix then holds values up to about 1 / RESCALE_BELOW times the true ones: far from overflow).
RESCALE_BELOW = 1e-12


def initial_state(
    batch: int, heads: int, dim: int, value_dim: int, dtype, device, feature_dim: Optional[int] = None
) -> State:
    """Empty state (no complete block, an empty open block); ``feature_dim`` is phi's width F (default D)."""
    acc = accumulation_dtype(dtype)
    return {
        "summary": torch.zeros(batch, heads, feature_dim or dim, value_dim + 1, dtype=acc, device=device),
        "scale": torch.ones(batch, heads, 1, dtype=acc, device=device),
        "open_k": torch.zeros(batch, heads, dim, dtype=acc, device=device),
        "open_v": torch.zeros(batch, heads, value_dim + 1, dtype=acc, device=device),
    }


def causal_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    state: State,
    head_rates: torch.Tensor,
    feature_map: FeatureMap = elu_plus_one,
    eps: float = 1e-6,
    divide: bool = True,
    block_decay: Optional[torch.Tensor] = None,
    in_place: bool = False,
):
    """Attends the newest position and advances the state (``divide``: by the kernel normaliser).

    With ``block_decay`` g ``(H,)``, the complete blocks are multiplied by g
    each time a block is folded in, so a block j weighs ``g^(b - j)`` from block b.

    Args:
        q, k: ``(B, H, D)``; v: ``(B, H, Dv)``, the newest position.
        state: from :func:`initial_state` or a previous step; not modified unless ``in_place``.
        head_rates: ``(H,)``, the rate of each head.
        in_place: fold complete blocks into ``state["summary"]`` in place, touching only the heads where
            a block completes (decoding without gradients: the largest tensor of the state is then
            neither copied nor rewritten at every step).
    Returns:
        ``(out (B, H, Dv) in q's dtype, new state)``.
    """
    acc = state["summary"].dtype
    if q.dtype != acc:
        q, k, v = q.to(acc), k.to(acc), v.to(acc)
    open_k = state["open_k"] + k
    open_v = state["open_v"] + with_ones(v)  # last entry: tokens in the open block
    count = open_v[..., -1:]
    phi_own = feature_map(open_k / count)
    own_v = open_v / count  # [mean v, 1]
    phi_q = feature_map(q)
    own_weight = (phi_q * phi_own).sum(dim=-1, keepdim=True)
    scale = state["scale"]  # (B, H, 1): the complete blocks' [S | z] is scale * state["summary"]
    read = scale * (phi_q.unsqueeze(-2) @ state["summary"]).squeeze(-2) + own_weight * own_v
    complete = count == head_rates.to(acc)[None, :, None]  # (B, H, 1): the open block is full
    # [S | z] <- g ([S | z] + phi(kbar) [vbar | 1]^T) where the block completes (g = 1 without decay), else
    # unchanged. The decay goes into the scale, so the stored matrix is touched once, by the outer product.
    fold_weight = phi_own * complete / scale
    if in_place:
        summary = state["summary"]
        folding = complete.flatten(1).any(dim=0).nonzero().flatten()  # heads where some row's block completes
        if folding.numel() == summary.size(1):
            summary.addcmul_(fold_weight.unsqueeze(-1), own_v.unsqueeze(-2))
        elif folding.numel():
            fold = fold_weight.index_select(1, folding).unsqueeze(-1) * own_v.index_select(1, folding).unsqueeze(-2)
            summary.index_add_(1, folding, fold)
    else:
        summary = torch.addcmul(state["summary"], fold_weight.unsqueeze(-1), own_v.unsqueeze(-2))
    if block_decay is not None:
        scale = scale * torch.where(complete, block_decay.to(acc)[None, :, None], 1.0)
        small = scale < RESCALE_BELOW
        if bool(small.any()):  # fold a tiny scale into the matrix before it can underflow
            summary = summary * torch.where(small, scale, 1.0).unsqueeze(-1)
            scale = torch.where(small, 1.0, scale)
    new_state = {
        "summary": summary,
        "scale": scale,
        "open_k": open_k.masked_fill(complete, 0.0),
        "open_v": open_v.masked_fill(complete, 0.0),
    }
    return normalise(read, eps, divide), new_state
