"""One step of causal AdaMRA attention for incremental decoding.

The state has two forms, which give the same numbers:

* **blocks** (where decoding starts): per rate group the complete blocks'
  features ``phi(kbar)`` ``(B, h, M, F)`` and ``[vbar | 1]`` ``(B, h, M, Dv + 1)``,
  a key/value cache pooled by the group's rate; a step reads them with the
  quadratic form ``(phi(q) phi(kbar)^T) [vbar | 1]``. It grows by one block
  per r tokens.
* **summary**: per head the complete blocks as ``[S | z]`` (``(F, Dv + 1)``,
  see ``bidirectional.with_ones``), kept as a scale times a matrix so that a
  decay multiplies only the scale; a step reads ``phi(q) [S | z]``. Its size
  does not depend on the position.

Both keep the open block's running sums of k and of ``[v, 1]`` (whose last
entry counts its tokens); a step adds the new token to them, reads
``phi(q)`` against the complete blocks plus the open block's means, and
stores the open block once it holds r tokens. The blocks form is smaller
and cheaper to read at sentence lengths (beam search copies the whole state
at every step), the summary from some length on: a state switches once,
when its blocks cost as much to read as the summary would
(``bidirectional.cached_blocks_are_cheaper``, averaged over the heads). So
the state never grows past about the summary's size, and work and memory
per step are bounded by ``O(H * F * Dv)`` at every position.

The state is a dict of tensors whose first dimension is the batch (x beam)
axis, so beam search can reorder it with ``index_select(0, new_order)``.
All rows of a state are at the same position (each call advances every row).
"""

from functools import lru_cache
from typing import Dict, Optional, Sequence, Tuple, Union

import torch

from .bidirectional import accumulation_dtype, cached_blocks_are_cheaper, normalise, with_ones
from .dense import rate_groups
from .feature_maps import FeatureMap, elu_plus_one

State = Dict[str, torch.Tensor]
# A decayed state keeps [S | z] as scale * matrix; once a scale falls below this, it is folded into the
# matrix (the matrix then holds values up to about 1 / RESCALE_BELOW times the true ones: far from overflow).
RESCALE_BELOW = 1e-12


def initial_state(
    batch: int, heads: int, dim: int, value_dim: int, dtype, device, feature_dim: Optional[int] = None,
    form: str = "blocks",
) -> State:
    """Empty state (no complete block, an empty open block) in ``form`` ``blocks`` (no block stored yet) or
    ``summary`` (a zero ``[S | z]``); ``feature_dim`` is phi's width F (default D), used by the summary."""
    if form not in ("blocks", "summary"):
        raise ValueError(f"unknown state form {form!r}: choose blocks or summary")
    acc = accumulation_dtype(dtype)
    state = {
        "open_k": torch.zeros(batch, heads, dim, dtype=acc, device=device),
        "open_v": torch.zeros(batch, heads, value_dim + 1, dtype=acc, device=device),
    }
    if form == "blocks":
        state["position"] = torch.zeros(batch, dtype=torch.long, device=device)
    else:
        state["summary"] = torch.zeros(batch, heads, feature_dim or dim, value_dim + 1, dtype=acc, device=device)
        state["scale"] = torch.ones(batch, heads, 1, dtype=acc, device=device)
    return state


@lru_cache(maxsize=None)
def head_ranges(rates: Tuple[int, ...]) -> Tuple[Tuple[int, int, int], ...]:
    """``(first head, end head, rate)`` of each run of consecutive heads with the same rate (a rate group)."""
    ranges, first = [], 0
    for rate, heads in rate_groups(rates):
        ranges.append((first, first + heads, rate))
        first += heads
    return tuple(ranges)


def causal_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    state: State,
    head_rates: Union[torch.Tensor, Sequence[int]],
    feature_map: FeatureMap = elu_plus_one,
    eps: float = 1e-6,
    divide: bool = True,
    block_decay: Optional[torch.Tensor] = None,
    in_place: bool = False,
):
    """Attends the newest position and advances the state (``divide``: by the kernel normaliser).

    With ``block_decay`` g ``(H,)``, a complete block j weighs ``g^(b - j)`` from block b.

    Args:
        q, k: ``(B, H, D)``; v: ``(B, H, Dv)``, the newest position.
        state: from :func:`initial_state` or a previous step; not modified unless ``in_place``.
        head_rates: ``(H,)``, the rate of each head.
        in_place: summary form: fold complete blocks into ``state["summary"]`` in place, touching only the
            heads where a block completes (decoding without gradients: the largest tensor of the state is
            then neither copied nor rewritten at every step).
    Returns:
        ``(out (B, H, Dv) in q's dtype, new state)``.
    """
    acc = state["open_k"].dtype
    if q.dtype != acc:
        q, k, v = q.to(acc), k.to(acc), v.to(acc)
    open_k = state["open_k"] + k
    open_v = state["open_v"] + with_ones(v)  # last entry: tokens in the open block
    count = open_v[..., -1:]
    phi_own = feature_map(open_k / count)
    own_v = open_v / count  # [mean v, 1]
    phi_q = feature_map(q)
    own_read = (phi_q * phi_own).sum(dim=-1, keepdim=True) * own_v
    rate_of_head = torch.as_tensor(head_rates, device=q.device)
    complete = count == rate_of_head.to(acc)[None, :, None]  # (B, H, 1): the open block is full
    open_sums = {"open_k": open_k.masked_fill(complete, 0.0), "open_v": open_v.masked_fill(complete, 0.0)}
    if "summary" in state:  # needs the rates only as a tensor: no copy to the host at every step
        read, new_state = _summary_step(phi_q, phi_own, own_v, own_read, complete, state, block_decay, in_place)
        return normalise(read, eps, divide), {**new_state, **open_sums}
    rates = tuple(int(rate) for rate in rate_of_head.tolist())
    read, new_state = _blocks_step(phi_q, phi_own, own_v, own_read, state, rates, block_decay)
    new_state.update(open_sums)
    if not _blocks_are_cheaper(new_state, rates, phi_q.size(-1), own_v.size(-1) - 1):
        new_state = blocks_to_summary(new_state, rates, block_decay)
    return normalise(read, eps, divide), new_state


def _summary_step(phi_q, phi_own, own_v, own_read, complete, state, block_decay, in_place):
    """The summary form's read and its new ``summary`` and ``scale``."""
    scale = state["scale"]  # (B, H, 1): the complete blocks' [S | z] is scale * state["summary"]
    read = scale * (phi_q.unsqueeze(-2) @ state["summary"]).squeeze(-2) + own_read
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
        scale = scale * torch.where(complete, block_decay.to(scale.dtype)[None, :, None], 1.0)
        small = scale < RESCALE_BELOW
        if bool(small.any()):  # fold a tiny scale into the matrix before it can underflow
            summary = summary * torch.where(small, scale, 1.0).unsqueeze(-1)
            scale = torch.where(small, 1.0, scale)
    return read, {"summary": summary, "scale": scale}


@lru_cache(maxsize=1024)
def _block_exponents(rates: Tuple[int, ...], tokens: int, dtype, device) -> torch.Tensor:
    """``(H, 1, M_1)``: after ``tokens`` tokens, ``M_h - j`` for block j < M_h = tokens // r_h of head h (the
    power of its decay that block j weighs with, seen from the open block), M_1 the most blocks of any head."""
    complete = torch.tensor([tokens // rate for rate in rates], dtype=dtype, device=device)
    most = tokens // min(rates)
    return (complete[:, None] - torch.arange(most, dtype=dtype, device=device)).unsqueeze(1)


def _block_weights(block_decay: Optional[torch.Tensor], rates: Tuple[int, ...], tokens: int, dtype):
    """``(H, 1, M_1)`` weights ``g_h^(M_h - j)`` of the complete blocks of every head after ``tokens`` tokens
    (slice ``[first:end, :, :M_h]`` for a rate group); None without decay."""
    if block_decay is None or tokens < min(rates):
        return None
    return block_decay.to(dtype)[:, None, None] ** _block_exponents(rates, tokens, dtype, block_decay.device)


def _blocks_step(phi_q, phi_own, own_v, own_read, state, rates, block_decay):
    """The blocks form's read and its new ``position``, ``features{g}`` and ``values{g}``.

    Work shared by the rate groups (splitting, the decay weights) is done once for all heads, so that a
    group costs a few products and, when its block completes, two concatenations.
    """
    position = int(state["position"][0]) if state["position"].numel() else 0  # tokens before this one
    ranges = head_ranges(rates)
    sizes = [end - first for first, end, _ in ranges]
    queries = phi_q.unsqueeze(-2).split(sizes, dim=1)  # (B, h, 1, F) per group
    decay = _block_weights(block_decay, rates, position, phi_q.dtype)
    storing = [(position + 1) % rate == 0 for _, _, rate in ranges]  # the group's open block is complete
    if any(storing):
        new_features = phi_own.unsqueeze(2).split(sizes, dim=1)
        new_values = own_v.unsqueeze(2).split(sizes, dim=1)
    new_state = {"position": state["position"] + 1}
    reads = []
    for group, (first, end, _) in enumerate(ranges):
        features, values = state.get(f"features{group}"), state.get(f"values{group}")
        if features is None:
            reads.append(own_read.new_zeros(own_read.size(0), end - first, 1, own_read.size(-1)))
        else:
            weights = queries[group] @ features.transpose(-1, -2)  # (B, h, 1, M)
            if decay is not None:
                weights = weights * decay[first:end, :, :features.size(2)]
            reads.append(weights @ values)
        if storing[group]:
            if features is None:
                features, values = new_features[group], new_values[group]
            else:
                features = torch.cat([features, new_features[group]], dim=2)
                values = torch.cat([values, new_values[group]], dim=2)
        if features is not None:
            new_state[f"features{group}"], new_state[f"values{group}"] = features, values
    stacked = reads[0] if len(reads) == 1 else torch.cat(reads, dim=1)
    return own_read + stacked.squeeze(-2), new_state


def _blocks_are_cheaper(state: State, rates: Tuple[int, ...], feature_dim: int, value_dim: int) -> bool:
    """Whether the stored blocks (mean per head) still cost less to read than ``[S | z]`` would."""
    stored = sum(
        (end - first) * state[f"features{group}"].size(2)
        for group, (first, end, _) in enumerate(head_ranges(rates)) if f"features{group}" in state
    )
    return cached_blocks_are_cheaper(stored / len(rates), feature_dim, value_dim, feature_dim)


def blocks_to_summary(state: State, head_rates: Sequence[int], block_decay: Optional[torch.Tensor] = None) -> State:
    """The same state in the summary form: ``[S | z] = sum_j g^(M - j) phi(kbar_j) [vbar_j | 1]^T`` per head."""
    open_k, open_v = state["open_k"], state["open_v"]
    batch, heads, _ = open_k.shape
    rates = tuple(int(rate) for rate in head_rates)
    ranges = head_ranges(rates)
    decay = _block_weights(block_decay, rates, int(state["position"][0]), open_k.dtype)
    summaries = []
    for group, (first, end, _) in enumerate(ranges):
        features, values = state.get(f"features{group}"), state.get(f"values{group}")
        if features is None:
            summaries.append(None)
            continue
        if decay is not None:
            features = features * decay[first:end, :, :features.size(2)].transpose(-1, -2)
        summaries.append(features.transpose(-1, -2) @ values)
    shape = next(summary.shape for summary in summaries if summary is not None)
    summary = torch.cat([
        summary if summary is not None else open_k.new_zeros(batch, end - first, *shape[2:])
        for summary, (first, end, _) in zip(summaries, ranges)
    ], dim=1)
    return {"summary": summary, "scale": open_k.new_ones(batch, heads, 1), "open_k": open_k, "open_v": open_v}
