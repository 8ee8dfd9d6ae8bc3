"""One step of causal AdaMRA attention for incremental decoding.

Per head the state holds the complete blocks as ``(S, z)`` and the current
(partial) block as running sums of k and v. A step adds the new token to the
partial sums, reads ``phi(q)`` against the complete blocks plus the partial
block's means, and folds the partial block into ``(S, z)`` once it holds r
tokens. Work and memory per step are O(H * D * Dv) at every position.

The state is a dict of tensors whose first dimension is the batch (x beam)
axis, so beam search can reorder it with ``index_select(0, new_order)``.
"""

from typing import Dict

import torch

from .bidirectional import accumulation_dtype
from .feature_maps import FeatureMap, elu_plus_one

State = Dict[str, torch.Tensor]


def initial_state(batch: int, heads: int, dim: int, value_dim: int, dtype, device) -> State:
    """Empty state; ``steps`` ``(B,)`` counts the tokens seen so far."""
    acc = accumulation_dtype(dtype)
    return {
        "kv": torch.zeros(batch, heads, dim, value_dim, dtype=acc, device=device),
        "k_sum": torch.zeros(batch, heads, dim, dtype=acc, device=device),
        "partial_k": torch.zeros(batch, heads, dim, dtype=acc, device=device),
        "partial_v": torch.zeros(batch, heads, value_dim, dtype=acc, device=device),
        "steps": torch.zeros(batch, dtype=torch.long, device=device),
    }


def causal_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    state: State,
    head_rates: torch.Tensor,
    feature_map: FeatureMap = elu_plus_one,
    eps: float = 1e-6,
):
    """Attends the newest position and advances the state.

    Args:
        q, k: ``(B, H, D)``; v: ``(B, H, Dv)``, the newest position.
        state: from :func:`initial_state` or a previous step (not modified).
        head_rates: ``(H,)`` long tensor, the rate of each head.
    Returns:
        ``(out (B, H, Dv) in q's dtype, new state)``.
    """
    acc = state["kv"].dtype
    q, k, v = q.to(acc), k.to(acc), v.to(acc)
    partial_k = state["partial_k"] + k
    partial_v = state["partial_v"] + v
    # Tokens in the current block, including this one: (B, H, 1).
    count = (state["steps"][:, None] % head_rates[None, :] + 1).unsqueeze(-1).to(acc)
    phi_own = feature_map(partial_k / count)
    own_v = partial_v / count

    phi_q = feature_map(q)
    own_weight = (phi_q * phi_own).sum(dim=-1, keepdim=True)
    numerator = (phi_q.unsqueeze(-2) @ state["kv"]).squeeze(-2) + own_weight * own_v
    denominator = (phi_q * state["k_sum"]).sum(dim=-1, keepdim=True) + own_weight
    out = numerator / (denominator + eps)

    complete = (count == head_rates[None, :, None].to(acc)).to(acc)  # (B, H, 1)
    new_state = {
        "kv": state["kv"] + (complete * phi_own).unsqueeze(-1) * own_v.unsqueeze(-2),
        "k_sum": state["k_sum"] + complete * phi_own,
        "partial_k": partial_k * (1 - complete),
        "partial_v": partial_v * (1 - complete),
        "steps": state["steps"] + 1,
    }
    return out, new_state
