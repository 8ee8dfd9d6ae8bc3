"""One step of causal AdaMRA attention for incremental decoding.

The state has two forms, which give the same numbers:

* **blocks** (where decoding starts): the complete blocks of every head,
  one slot each, in the order they completed: their features ``phi(kbar)``
  ``features`` ``(B, C, F)`` and ``[vbar | 1]`` ``values`` ``(B, C, Dv + 1)``,
  a key/value cache pooled by each head's rate. The first
  ``S = sum_h position // r_h`` slots are stored; which head owns a slot and
  how far back its block lies follow from the position and the rates alone
  (:func:`slot_weights`). A step reads them, and the open blocks as H more
  slots after them, for all heads at once with
  ``((phi(q) phi(kbar)^T) * W) [vbar | 1]``, where the ``(H, S + H)`` matrix
  W holds each head's decay weights on its own slots and 0 on the others':
  two products however many rate groups there are. It grows by one slot per
  head every r_h tokens. Decoding without gradients (``in_place``) writes
  the open blocks into spare capacity at the end of these tensors (grown by
  half when full, up to what the form ever stores), where a completing one
  stays, so a step does not copy the stored slots; the rest is
  uninitialised and never read.
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
the state never grows past about the summary's size (about twice that when
decoding in place under beam search: spare capacity, and a second buffer
per tensor for the reorders), and work and memory per step are bounded by
``O(H * F * Dv)`` at every position.

The state is a dict of tensors whose first dimension is the batch (x beam)
axis, so beam search can reorder it with ``index_select(0, new_order)``;
:func:`reorder_state` does so copying only the stored slots.
All rows of a state are at the same position (each call advances every row).
"""

import math
from functools import lru_cache
from typing import Dict, NamedTuple, Optional, Sequence, Tuple, Union

import torch

from .bidirectional import accumulation_dtype, cached_blocks_are_cheaper, normalise, with_ones
from .causal import without_negligible
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
        in_place: decoding without gradients: the largest tensors of the state are neither copied nor
            rewritten at every step. Summary form: complete blocks are folded into ``state["summary"]`` in
            place, touching only the heads where a block completes; blocks form: complete blocks are written
            into spare capacity of ``features`` and ``values``.
    Returns:
        ``(out (B, H, Dv) in q's dtype, new state)``.
    """
    acc = state["open_k"].dtype
    if q.dtype != acc:
        q, k, v = q.to(acc), k.to(acc), v.to(acc)
    rates = _rate_tuple(head_rates)
    open_k = state["open_k"] + k
    open_v = state["open_v"] + with_ones(v)  # last entry: tokens in the open block
    count = open_v[..., -1:]
    own_v = open_v / count  # [mean v, 1]
    features = feature_map(torch.stack([q, open_k / count], dim=2))  # one call for phi(q) and phi(mean k)
    phi_q, phi_own = features[:, :, 0], features[:, :, 1]
    if "summary" in state:  # the summary form keeps no position: the counts say which blocks complete
        complete = count == _rate_column(rates, acc, q.device)  # (B, H, 1): the open block is full
        read, new_state = _summary_step(phi_q, phi_own, own_v, complete, state, block_decay, in_place)
        return normalise(read, eps, divide), {**new_state, **_restarted(open_k, open_v, complete)}
    position = _position(state)  # tokens before this one
    completing = _completing_heads(rates, position + 1, q.device)
    read, new_state = _blocks_step(phi_q, phi_own, own_v, state, rates, position, completing, block_decay, in_place)
    new_state.update(_restarted(open_k, open_v, None if completing is None else completing.mask))
    if not _blocks_are_cheaper(rates, position + 1, phi_q.size(-1), own_v.size(-1) - 1):
        new_state = blocks_to_summary(new_state, rates, block_decay)
    return normalise(read, eps, divide), new_state


def _restarted(open_k: torch.Tensor, open_v: torch.Tensor, complete: Optional[torch.Tensor]) -> State:
    """The open sums after a step: 0 in the heads (and rows) where ``complete`` ``(B or 1, H, 1)`` says the
    block was stored (None: none was)."""
    if complete is None:
        return {"open_k": open_k, "open_v": open_v}
    return {"open_k": open_k.masked_fill(complete, 0.0), "open_v": open_v.masked_fill(complete, 0.0)}


def _rate_tuple(head_rates: Union[torch.Tensor, Sequence[int]]) -> Tuple[int, ...]:
    """The rate of each head as a tuple of ints (the key of the caches below)."""
    return tuple(int(rate) for rate in (head_rates.tolist() if torch.is_tensor(head_rates) else head_rates))


@lru_cache(maxsize=None)
def _rate_column(rates: Tuple[int, ...], dtype, device) -> torch.Tensor:
    """``(1, H, 1)``: the rate of each head."""
    return torch.tensor(rates, dtype=dtype, device=device)[None, :, None]


def _summary_step(phi_q, phi_own, own_v, complete, state, block_decay, in_place):
    """The summary form's read and its new ``summary`` and ``scale``."""
    scale = state["scale"]  # (B, H, 1): the complete blocks' [S | z] is scale * state["summary"]
    own_read = (phi_q * phi_own).sum(dim=-1, keepdim=True) * own_v
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


def _stored_slots(rates: Tuple[int, ...], tokens: int) -> int:
    """How many slots the blocks form stores after ``tokens`` tokens: ``sum_h tokens // r_h``."""
    return sum(tokens // rate for rate in rates)


@lru_cache(maxsize=1024)
def _slot_owners(rates: Tuple[int, ...], tokens: int) -> Tuple[Tuple[int, int], ...]:
    """``(head, block index)`` of each slot of the blocks form after ``tokens`` tokens, in slot order."""
    return tuple((head, end // rate - 1) for end in range(1, tokens + 1)
                 for head, rate in enumerate(rates) if end % rate == 0)


@lru_cache(maxsize=1024)
def _slot_exponents(rates: Tuple[int, ...], tokens: int, dtype, device) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(owned, exponents)``, each ``(H, S + H)`` after ``tokens`` tokens, for the S stored slots and then one
    slot per head holding its open block: 1 where head h owns slot s, else 0; and ``M_h - j`` for head h's
    block j (``M_h = tokens // r_h``; 0 for the open block), the power of its decay that the block weighs
    with from the open block, else 0."""
    owners = _slot_owners(rates, tokens)
    heads = len(rates)
    owned = torch.zeros(heads, len(owners) + heads, dtype=dtype)
    exponents = torch.zeros(heads, len(owners) + heads, dtype=dtype)
    for slot, (head, block) in enumerate(owners):
        owned[head, slot] = 1.0
        exponents[head, slot] = tokens // rates[head] - block
    owned[:, len(owners):] = torch.eye(heads, dtype=dtype)
    return owned.to(device), exponents.to(device)


def slot_weights(block_decay: Optional[torch.Tensor], rates: Tuple[int, ...], tokens: int, dtype,
                 device) -> torch.Tensor:
    """``W`` ``(H, S + H)`` after ``tokens`` tokens (for the S stored slots, then the H open blocks):
    ``g_h^(M_h - j)`` where head h owns slot s (its block j), 1 without decay and for its open block, and 0 on
    the slots of other heads."""
    owned, exponents = _slot_exponents(rates, tokens, dtype, device)
    if block_decay is None:
        return owned
    return without_negligible(block_decay.to(dtype)[:, None] ** exponents * owned)  # no subnormal weights


@lru_cache(maxsize=None)
def _most_slots(rates: Tuple[int, ...], feature_dim: int, value_dim: int) -> int:
    """The most slots a blocks-form state ever stores: its size after the last step before it becomes a
    summary (:func:`_blocks_are_cheaper`)."""
    tokens = 1
    while _blocks_are_cheaper(rates, tokens, feature_dim, value_dim):
        tokens += 1
    return _stored_slots(rates, tokens)


def _position(state: State) -> int:
    """The tokens a blocks-form state has seen (every row has seen as many)."""
    return int(state["position"][0]) if state["position"].numel() else 0


def _blocks_step(phi_q, phi_own, own_v, state, rates, position, completing, block_decay, in_place):
    """The blocks form's read and its new ``position``, ``features`` and ``values`` (``position``: the
    tokens before this one; ``completing``: :func:`_completing_heads` after it).

    The open blocks are read as H more slots after the stored ones, each weighing 1 for its own head only;
    decoding in place writes them there, and the heads whose block completes keep theirs as stored slots.
    """
    heads = phi_q.size(1)
    stored = _stored_slots(rates, position)
    new_state = {name: state[name] for name in ("spare_features", "spare_values") if name in state}
    new_state["position"] = state["position"] + 1
    if in_place:
        capacity = _most_slots(rates, phi_own.size(-1), own_v.size(-1) - 1) + heads
        features = _with_room(state.get("features"), stored, heads, capacity, phi_own)
        values = _with_room(state.get("values"), stored, heads, capacity, own_v)
        features[:, stored:stored + heads] = phi_own
        values[:, stored:stored + heads] = own_v
        read_features, read_values = features[:, :stored + heads], values[:, :stored + heads]
    else:  # autograd may need every earlier tensor: new ones, of exact size
        read_features, read_values = phi_own, own_v
        if stored:
            read_features = torch.cat([state["features"][:, :stored], phi_own], dim=1)
            read_values = torch.cat([state["values"][:, :stored], own_v], dim=1)
    weights = (phi_q @ read_features.transpose(1, 2)) * slot_weights(
        block_decay, rates, position, phi_q.dtype, phi_q.device)  # (B, H, S + H)
    read = weights @ read_values
    if in_place:
        if completing is not None and not completing.first:  # move the completing heads' blocks to the front
            features[:, stored:stored + completing.count] = features[:, stored:stored + heads][:, completing.indices]
            values[:, stored:stored + completing.count] = values[:, stored:stored + heads][:, completing.indices]
        new_state["features"], new_state["values"] = features, values
    elif completing is not None:
        kept = stored + completing.count
        if completing.first:
            new_state["features"], new_state["values"] = read_features[:, :kept], read_values[:, :kept]
        else:
            new_state["features"] = torch.cat([read_features[:, :stored], phi_own[:, completing.indices]], dim=1)
            new_state["values"] = torch.cat([read_values[:, :stored], own_v[:, completing.indices]], dim=1)
    elif stored:
        new_state["features"], new_state["values"] = state["features"], state["values"]
    return read, new_state


class Completing(NamedTuple):
    """The heads whose open block completes at a step: ``mask`` ``(1, H, 1)``, ``indices`` ``(c,)``, their
    ``count`` c, and whether they are the ``first`` c heads (rates in increasing order, each dividing the next)."""
    mask: torch.Tensor
    indices: torch.Tensor
    count: int
    first: bool


@lru_cache(maxsize=None)
def _completing_on(rates: Tuple[int, ...], residue: int, device) -> Optional[Completing]:
    """:func:`_completing_heads` by the residue of the token count modulo the rates' least common multiple."""
    heads = [head for head, rate in enumerate(rates) if residue % rate == 0]
    if not heads:
        return None
    mask = torch.zeros(1, len(rates), 1, dtype=torch.bool, device=device)
    mask[0, heads] = True
    return Completing(mask, torch.tensor(heads, device=device), len(heads), heads == list(range(len(heads))))


def _completing_heads(rates: Tuple[int, ...], tokens: int, device) -> Optional[Completing]:
    """The heads whose open block is complete after ``tokens`` tokens (whose rate divides it); None when no
    head completes a block."""
    return _completing_on(rates, tokens % math.lcm(*rates), device)


# Slots a blocks-form state first makes room for when decoding writes them in place, and the factor (in
# halves) by which a full buffer grows: 3/2 keeps at most a third of a buffer unused (beam search holds two
# buffers per tensor) and copies the stored slots O(log S) times.
FIRST_CAPACITY = 8
GROWTH = 3


def _with_room(slots: Optional[torch.Tensor], stored: int, extra: int, capacity: int,
               like: torch.Tensor) -> torch.Tensor:
    """``slots`` ``(B, C, W)`` (its first ``stored`` rows the stored slots; None if none), or a copy in a
    larger buffer (1.5 times as large, at most ``capacity`` slots) when
    fewer than ``extra`` rows are free after them. ``like`` ``(B, *, W)`` gives a new buffer's shape and dtype."""
    needed = stored + extra
    if slots is not None and slots.size(1) >= needed:
        return slots
    size = max(min(max(stored * GROWTH // 2, FIRST_CAPACITY), capacity), needed)
    grown = like.new_empty(like.size(0), size, like.size(-1))
    if stored:
        grown[:, :stored] = slots[:, :stored]
    return grown


def _blocks_are_cheaper(rates: Tuple[int, ...], tokens: int, feature_dim: int, value_dim: int) -> bool:
    """Whether the blocks stored after ``tokens`` tokens (mean per head) still cost less to read than
    ``[S | z]`` would."""
    stored = _stored_slots(rates, tokens)
    return cached_blocks_are_cheaper(stored / len(rates), feature_dim, value_dim, feature_dim)


def reorder_state(state: State, new_order: torch.Tensor, head_rates: Sequence[int], reuse: bool = False) -> State:
    """``state`` with its rows in ``new_order`` ``(B',)`` (beam search): ``index_select(0, new_order)`` of every
    tensor, except that the blocks form copies only its stored slots.

    With ``reuse`` (decoding without gradients, where nothing reads a state after it is reordered) the slots
    are copied, with their spare capacity, into the buffers that the previous reorder left behind
    (``spare_features``, ``spare_values``), and this state's buffers are left behind for the next: beam search
    then moves the slots between two buffers per tensor instead of allocating (and the system zeroing) a
    fresh one at every step.
    """
    reordered = {name: tensor.index_select(0, new_order) for name, tensor in state.items()
                 if name not in ("features", "values", "spare_features", "spare_values")}
    if "features" not in state:
        return reordered
    stored = _stored_slots(_rate_tuple(head_rates), _position(state))
    for name in ("features", "values"):
        slots = state[name]
        if torch.is_grad_enabled() and slots.requires_grad:  # autograd cannot write into a buffer
            reordered[name] = slots[:, :stored].index_select(0, new_order)
            continue
        shape = (new_order.numel(),) + tuple(slots.shape[1:])
        target = state.get("spare_" + name) if reuse else None
        if target is None or tuple(target.shape) != shape:
            target = slots.new_empty(shape)
        torch.index_select(slots[:, :stored], 0, new_order, out=target[:, :stored])
        reordered[name] = target
        if reuse:
            reordered["spare_" + name] = slots
    return reordered


def blocks_to_summary(state: State, head_rates: Sequence[int], block_decay: Optional[torch.Tensor] = None) -> State:
    """The same state in the summary form: ``[S | z] = sum_j g^(M - j) phi(kbar_j) [vbar_j | 1]^T`` per head."""
    open_k, open_v = state["open_k"], state["open_v"]
    batch, heads, _ = open_k.shape
    rates = _rate_tuple(head_rates)
    tokens = _position(state)
    owned, _ = _slot_exponents(rates, tokens, open_k.dtype, open_k.device)
    weights = slot_weights(block_decay, rates, tokens, open_k.dtype, open_k.device)  # (H, S + H): stored first
    summaries = []
    for head in range(heads):  # one head at a time: its own stored slots only
        slots = owned[head, :-heads].nonzero().flatten()
        features = state["features"].index_select(1, slots) * weights[head, slots, None]
        summaries.append(features.transpose(1, 2) @ state["values"].index_select(1, slots))
    return {"summary": torch.stack(summaries, dim=1), "scale": open_k.new_ones(batch, heads, 1), "open_k": open_k,
            "open_v": open_v}
