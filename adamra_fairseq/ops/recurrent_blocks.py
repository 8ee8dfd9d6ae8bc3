"""A decoding state that lists the complete blocks while that is cheaper than their summary.

The recurrent state of :mod:`.recurrent` keeps each head's complete blocks
as ``[S | z]``, ``F x (Dv + 1)`` numbers that every step reads in full (and
beam search copies at every reorder), whatever the position. Early in the
output, when a head has seen only ``P`` complete blocks, the blocks
themselves are fewer numbers: their features ``phi(kbar_j)`` and
``[vbar_j | 1]``, ``P (F + Dv + 1)`` per head, and reading them costs as
much. So decoding starts with this list (at MT lengths it usually ends in
it) and turns it into the summary (:func:`blocks_to_summary`) once the list
would be larger (:func:`list_is_cheaper`): the
state stays bounded by the summary's size, constant from then on.

Slots are shared by all heads: slot j of a head holds its j-th complete
block, zeros until that block completes (zero features weigh nothing), so
the list grows with the fastest head (rate 1 adds a slot at every step).
With a decay g, slot j weighs ``g^(b - j)`` from the open block b; the
weights are kept per slot and multiplied by g when a block completes.
"""

from typing import Optional

import torch

from .bidirectional import normalise
from .feature_maps import FeatureMap, elu_plus_one
from .recurrent import State, advance_open_block, initial_state


def initial_block_state(
    batch: int, heads: int, dim: int, value_dim: int, dtype, device, feature_dim: Optional[int] = None
) -> State:
    """Empty list of complete blocks (no slot) and an empty open block; ``feature_dim``: phi's width F."""
    summary_state = initial_state(batch, heads, dim, value_dim, dtype, device, feature_dim)
    acc = summary_state["open_v"].dtype
    return {
        "block_features": summary_state["summary"].new_zeros(batch, heads, 0, feature_dim or dim),
        "block_values": summary_state["summary"].new_zeros(batch, heads, 0, value_dim + 1),
        "block_weights": torch.zeros(batch, heads, 0, dtype=acc, device=device),
        "blocks": torch.zeros(batch, heads, 1, dtype=acc, device=device),  # complete blocks of each head
        "open_k": summary_state["open_k"],
        "open_v": summary_state["open_v"],
    }


def list_is_cheaper(state: State) -> bool:
    """Whether the list with one more slot is still no larger than the summary: per head, slots of
    ``F + Dv + 1`` features and values and a weight against ``F (Dv + 1)`` (reading either costs as many
    multiply-adds as it holds numbers; the block counter and the summary's scale match)."""
    features, values = state["block_features"], state["block_values"]
    slots, width, value_width = features.size(2) + 1, features.size(-1), values.size(-1)
    return slots * (width + value_width + 1) <= width * value_width


def blocks_to_summary(state: State) -> State:
    """The same state in the form of :func:`.recurrent.initial_state`: ``[S | z] = sum_j w_j phi_j [v_j | 1]^T``."""
    weighted = state["block_features"] * state["block_weights"].unsqueeze(-1)
    return {
        "summary": weighted.transpose(2, 3) @ state["block_values"],
        "scale": torch.ones_like(state["blocks"]),
        "open_k": state["open_k"],
        "open_v": state["open_v"],
    }


def causal_step_blocks(
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
    """:func:`.recurrent.causal_step` on a block list from :func:`initial_block_state`.

    q, k ``(B, H, D)``, v ``(B, H, Dv)``, head_rates ``(H,)`` -> ``(out (B, H, Dv), new state)``; a block
    that completes gets a slot (one more slot when a head has used them all). The state is not modified
    unless ``in_place`` (decoding without gradients), where a new block is written into its slot in place.
    """
    q, (open_k, open_v, phi_own, own_v) = advance_open_block(q, k, v, state, feature_map)
    acc = open_v.dtype
    phi_q = feature_map(q)
    features, values, weights = state["block_features"], state["block_values"], state["block_weights"]
    slot_weights = (features @ phi_q.unsqueeze(-1)).squeeze(-1) * weights  # (B, H, P)
    read = (slot_weights.unsqueeze(-2) @ values).squeeze(-2) + (phi_q * phi_own).sum(-1, keepdim=True) * own_v
    complete = open_v[..., -1:] == head_rates.to(acc)[None, :, None]  # (B, H, 1)
    blocks = state["blocks"]
    if bool(complete.any()):
        if int(blocks.max()) == features.size(2):  # the fastest head has filled every slot: add one
            features, values, weights = (torch.nn.functional.pad(x, pad) for x, pad in (
                (features, (0, 0, 0, 1)), (values, (0, 0, 0, 1)), (weights, (0, 1))))
        decay = torch.ones_like(blocks) if block_decay is None else block_decay.to(acc)[None, :, None]
        # A completing head's blocks move one block further back (times g) and its new block enters its
        # next free slot with weight g; every other head writes zeros into its (still empty) next slot.
        weights = weights * torch.where(complete, decay, 1.0)
        slot = blocks.long()
        write = torch.Tensor.scatter_ if in_place else torch.Tensor.scatter
        features = write(features, 2, slot[..., None].expand(-1, -1, 1, features.size(-1)),
                         (phi_own * complete).unsqueeze(2))
        values = write(values, 2, slot[..., None].expand(-1, -1, 1, values.size(-1)), (own_v * complete).unsqueeze(2))
        weights = write(weights, 2, slot, decay * complete)
        blocks = blocks + complete.to(acc)
    new_state = {
        "block_features": features,
        "block_values": values,
        "block_weights": weights,
        "blocks": blocks,
        "open_k": open_k.masked_fill(complete, 0.0),
        "open_v": open_v.masked_fill(complete, 0.0),
    }
    return normalise(read, eps, divide), new_state
