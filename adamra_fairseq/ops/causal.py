"""Causal AdaMRA attention (decoder self-attention), chunked and linear in length.

For one group of heads sharing a rate r, a query at position t in block
b = t // r attends to

* every complete block j < b as one slot (block means kbar_j, vbar_j), and
* its own block as one slot: the running means ktilde_t, vtilde_t of
  positions b*r .. t.

    o_t = (phi(q_t)^T S_{<b} + a_t vtilde_t) / (phi(q_t)^T z_{<b} + a_t + eps),
    a_t = phi(q_t)^T phi(ktilde_t)

The own-block slot is elementwise, O(n*D). The complete blocks are causal
linear attention at block granularity, computed in chunks of C positions
(C a multiple of r): earlier chunks through a carried state (an exclusive
prefix sum over chunk summaries, (n/C)*D*Dv per head), blocks of the same
chunk through a small masked dense product. No n x D x Dv tensor is built.

Rows must be left-aligned: pads, if any, after the real tokens (a causal
query never sees later positions, so trailing pads need no masking).

Optional decay (``block_decay`` g per head, 0 < g <= 1): a complete block j
seen from a query in block b weighs ``g^(b - j)``; the own-block slot weighs
1. Chunks then carry their state with the factor ``g^(blocks per chunk)``
per chunk, through a lower-triangular matrix of powers of g (no division by
powers of g, so nothing overflows).

At rate 1 a query's own block is its own position: the masked product of its
chunk reads it with the earlier ones (no separate own-block slot).
:func:`causal_heads` runs every rate group and writes all heads' outputs into
one time-major tensor. Training with Hedgehog, elu + 1 or relu features
takes :class:`_ChunkedCausal`'s backward pass, which keeps q, k, v (in the
model, the stacked q/k/v projection), the normaliser and the output,
recomputes the rest (docs/method.md has the formulas) and writes every
group's gradients into whole tensors.
"""

import math
from typing import NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .bidirectional import accumulation_dtype, with_ones
from .feature_maps import DOT_PRODUCT_KERNELS, FEATURE_MAP_BACKWARDS, FeatureMap, elu_plus_one, has_formula_backward
from .heads import head_groups, heads_buffer, qkv_inputs, refuse_second_backward, reusable_for_gradient
from .pooling import block_count
from .recompute import wants_gradients


def running_block_means(x: torch.Tensor, rate: int) -> torch.Tensor:
    """``(B, h, T, D)`` -> mean of x over positions ``(t // r) * r .. t`` for every t (T a multiple of r);
    x itself for r = 1 (a cumulative sum over blocks of one token would be a pass over memory for nothing).

    Without gradients the sums run as r - 1 in-place additions of strided slices: 2-3x faster than ``cumsum``
    over the within-block axis on this CPU build (0.35 against 0.9 ms at 4096 x 2 x 64, rate 2).
    """
    if rate == 1:
        return x
    batch, heads, seq_len, dim = x.shape
    blocks = x.view(batch, heads, seq_len // rate, rate, dim)
    counts = torch.arange(1, rate + 1, device=x.device, dtype=x.dtype)
    if torch.is_grad_enabled() and x.requires_grad:
        return (blocks.cumsum(dim=3) / counts[:, None]).view(batch, heads, seq_len, dim)
    sums = torch.empty_like(blocks)
    sums[:, :, :, 0] = blocks[:, :, :, 0]
    for position in range(1, rate):
        torch.add(sums[:, :, :, position - 1], blocks[:, :, :, position], out=sums[:, :, :, position])
    return sums.div_(counts[:, None]).view(batch, heads, seq_len, dim)


def chunk_length(seq_len: int, rate: int, chunk_size: int) -> int:
    """The chunk the op uses for ``seq_len`` tokens: at least ``chunk_size`` and about ``2 sqrt(T)`` (a multiple
    of ``rate``), at most the whole sequence's blocks.

    The chunks' own products cost about ``T C F / r``, the carried state ``(T / C) F Dv`` and, with a decay,
    ``(T / C)^2 F Dv`` (a matrix of decay powers between chunks), so a fixed C grows quadratic in T. On a
    2-core CPU (8 heads of 64, Hedgehog features, forward + backward) C = 64 took 1.13 s at 16384 tokens with
    a decay, C = 256 0.61 s; at 4096 tokens C = 128 beat 64 by 10%, without a decay too (docs/benchmarks.md).
    """
    grown = max(chunk_size, -(-2 * math.isqrt(seq_len) // rate) * rate)
    return min(grown, block_count(seq_len, rate) * rate)


class ChunkLayout(NamedTuple):
    """How one rate group's padded sequence is cut: ``rate`` r, ``chunk_size`` C positions, ``num_chunks`` N."""

    rate: int
    chunk_size: int
    num_chunks: int

    @property
    def blocks_per_chunk(self) -> int:
        return self.chunk_size // self.rate

    @property
    def own_slot(self) -> bool:
        """Whether a query reads its own (partial) block as a separate slot; at rate 1 its own block is its own
        position, a complete block read with the earlier ones."""
        return self.rate > 1

    def chunks(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, h, N C, W)`` -> ``(B, h, N, C, W)`` (a view)."""
        return x.view(x.size(0), x.size(1), self.num_chunks, self.chunk_size, x.size(-1))

    def positions(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, h, N, C or C / r, W)`` -> ``(B, h, N C or N C / r, W)`` (a view)."""
        return x.view(x.size(0), x.size(1), -1, x.size(-1))

    def block_ends(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, h, N C, W)`` -> ``(B, h, N, C / r, W)``: the last position of every block (where a running mean is
        the block's full mean)."""
        ends = x[:, :, self.rate - 1 :: self.rate]
        return ends.reshape(x.size(0), x.size(1), self.num_chunks, self.blocks_per_chunk, x.size(-1))


class DecayExponents(NamedTuple):
    """Integer exponents of the decay g (as floats; -1 where the weight is 0) for one :class:`ChunkLayout`:
    ``intra`` ``(C, P)`` query position -> block of the same chunk read as complete (the earlier ones; at rate 1
    the query's own too); ``carry`` ``(N, N)`` chunk -> earlier chunk's summary; ``query`` ``(C,)`` chunk start
    -> query position; ``key`` ``(P,)`` block -> chunk end."""

    intra: torch.Tensor
    carry: torch.Tensor
    query: torch.Tensor
    key: torch.Tensor


def decay_exponents(layout: ChunkLayout, dtype: torch.dtype, device) -> DecayExponents:
    """The exponents of :class:`DecayExponents`. Without a decay only ``intra >= 0`` is used: the mask of the
    blocks each query reads within its chunk."""
    query_block = torch.arange(layout.chunk_size, device=device) // layout.rate  # block of each position
    key_block = torch.arange(layout.blocks_per_chunk, device=device)
    distance = query_block[:, None] - key_block[None, :]
    chunk = torch.arange(layout.num_chunks, device=device)
    gap = chunk[:, None] - 1 - chunk[None, :]  # chunk c carries chunk c' < c with weight g^(P (c - 1 - c'))
    nearest = 1 if layout.own_slot else 0
    return DecayExponents(
        intra=torch.where(distance >= nearest, distance, -1).to(dtype),
        carry=torch.where(gap >= 0, layout.blocks_per_chunk * gap, -1).to(dtype),
        query=query_block.to(dtype),
        key=(layout.blocks_per_chunk - key_block).to(dtype),  # a chunk's summary as seen from the next chunk's start
    )


def negligible_weight(dtype: torch.dtype) -> float:
    """Decay weights below this (eps^2 of ``dtype``: 1.4e-14 in fp32) are taken as 0.

    A query's own block weighs 1, so such a weight is far below what its sums can resolve; and powers of a
    decay left alone fall into the subnormal range (below 1.2e-38 in fp32), where this CPU computes many times
    slower: with a decay of 0.5 per token (the default decoder's most local head at the start) the op took
    1.18 s at 16384 tokens with them and 0.56 s without (docs/benchmarks.md).
    """
    return torch.finfo(dtype).eps ** 2


def without_negligible(weights: torch.Tensor) -> torch.Tensor:
    """``weights`` with the entries below :func:`negligible_weight` set to 0 (differentiable: their gradient is 0)."""
    return torch.where(weights < negligible_weight(weights.dtype), 0.0, weights)


def decay_powers(decay: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
    """``(h,)`` decays and an exponent tensor -> ``(h, *exponent.shape)``: ``g ** e``, 0 where e < 0 or where
    the power is negligible (:func:`without_negligible`)."""
    base = decay.view(-1, *([1] * exponent.dim()))
    return without_negligible(torch.where(exponent >= 0, base ** exponent.clamp(min=0), 0.0))


def decay_powers_backward(decay: torch.Tensor, exponent: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``dL/dg`` ``(h,)`` from ``dL/d(g ** e)`` ``(h, *exponent.shape)`` (:func:`decay_powers`; 0 where the
    power was taken as 0)."""
    base = decay.view(-1, *([1] * exponent.dim()))
    kept = (exponent >= 1) & (decay_powers(decay, exponent) > 0)
    slope = torch.where(kept, exponent * base ** (exponent - 1).clamp(min=0), 0.0)
    return (grad * slope).flatten(1).sum(dim=1)


def intra_weights(decay: Optional[torch.Tensor], exponents: DecayExponents) -> torch.Tensor:
    """``(C, P)`` 1/0 mask, or ``(1, h, 1, C, P)`` decay powers: the weights of a chunk's own blocks."""
    if decay is None:
        return (exponents.intra >= 0).to(exponents.intra.dtype)
    return decay_powers(decay, exponents.intra)[None, :, None]


def carry_weights(decay: torch.Tensor, exponents: DecayExponents):
    """The decay's weights on the earlier chunks' path: keys ``(h, 1, P, 1)`` (block -> chunk end), queries
    ``(h, 1, C, 1)`` (chunk start -> query) and the carry ``(h, N, N)`` between chunks."""
    keys = decay_powers(decay, exponents.key)[:, None, :, None]
    queries = decay_powers(decay, exponents.query)[:, None, :, None]
    return keys, queries, decay_powers(decay, exponents.carry)


def exclusive_suffix_sum(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum of the entries after each position along ``dim`` (0 at the last)."""
    return x.sum(dim=dim, keepdim=True) - x.cumsum(dim=dim)


def running_block_means_backward(grad: torch.Tensor, rate: int) -> torch.Tensor:
    """``dL/dx`` from ``dL/d running_block_means(x, rate)``: position t feeds the means of t .. its block's end."""
    if rate == 1:
        return grad
    batch, heads, seq_len, dim = grad.shape
    counts = torch.arange(1, rate + 1, device=grad.device, dtype=grad.dtype)
    sums = grad.view(batch, heads, seq_len // rate, rate, dim) / counts[:, None]
    for position in range(rate - 2, -1, -1):  # suffix sums within each block, in place
        sums[:, :, :, position] += sums[:, :, :, position + 1]
    return sums.view(batch, heads, seq_len, dim)


def per_head_product(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``matrix @ x`` for one ``(h, N', N)`` matrix per head and ``x`` ``(B, h, N, W)`` -> ``(B, h, N', W)``, by
    whichever product copies less: the matrix expanded over the batch (which the batched product copies B
    times when B > 1, and x too when its batch and head axes cannot be merged into one), or each head's matrix
    times its ``(N, B W)`` columns (x copied once; the result a permuted view). On this CPU: the dense causal
    form's running means over 16 x 8 heads x 256 tokens of 64, 5.7 ms by columns against 19.7 expanded; over
    136 x 8 x 30, 1.1 ms expanded against 1.6 by columns; the chunk summaries (W = F (Dv + 1)) expanded."""
    batch, heads, length, width = x.shape
    mergeable = batch == 1 or x.stride(0) == heads * x.stride(1)
    expanded_copies = (batch > 1) * batch * heads * matrix.size(1) * length + (0 if mergeable else x.numel())
    if expanded_copies <= x.numel():
        return matrix.expand(batch, heads, *matrix.shape[1:]) @ x
    columns = x.permute(1, 2, 0, 3).reshape(heads, length, batch * width)
    return (matrix @ columns).view(heads, matrix.size(1), batch, width).permute(2, 0, 1, 3)


def _carried_states(keys: torch.Tensor, values: torch.Tensor, carry: Optional[torch.Tensor]):
    """Each chunk's summary ``keys^T values`` ``(B, h, N, F, Dv + 1)`` and what chunk c reads of the earlier ones:
    their plain sum (``carry`` None) or their sum weighted by ``carry`` ``(h, N, N)`` (one
    :func:`per_head_product` over the flattened summaries)."""
    summary = keys.transpose(3, 4) @ values
    if carry is None:
        return summary, summary.cumsum(dim=2) - summary
    return summary, per_head_product(carry, summary.flatten(3)).reshape(summary.shape)


def _numerator_and_sum(q, k_running, v_running, decay, layout: ChunkLayout, feature_map):
    """``[numerator | normaliser]`` ``(B, h, N C, Dv + 1)`` of the chunked op from the running means of k and v
    (padded to whole chunks, accumulation dtype). Autograd can differentiate it (the maps without a formula
    backward); :class:`_ChunkedCausal` recomputes its pieces instead."""
    values = with_ones(v_running)  # [mean v, 1]: numerator and normaliser together
    exponents = decay_exponents(layout, q.dtype, q.device)
    q_chunks, k_block, v_block = layout.chunks(q), layout.block_ends(k_running), layout.block_ends(values)
    multi = layout.num_chunks > 1
    own_weight = None
    kernel = DOT_PRODUCT_KERNELS.get(feature_map)
    if kernel is not None:  # weights from N-wide dot products; the features only for a carried state
        if layout.own_slot:
            own_weight = kernel((q * k_running).sum(dim=-1, keepdim=True))
        scores = kernel(q_chunks @ k_block.transpose(3, 4))
        phi_q_chunks, phi_k_block = (feature_map(q_chunks), feature_map(k_block)) if multi else (None, None)
    else:
        phi_q, phi_k_running = feature_map(q), feature_map(k_running)
        if layout.own_slot:
            own_weight = (phi_q * phi_k_running).sum(dim=-1, keepdim=True)
        phi_q_chunks, phi_k_block = layout.chunks(phi_q), layout.block_ends(phi_k_running)
        scores = phi_q_chunks @ phi_k_block.transpose(3, 4)
    # Blocks of the same chunk read as complete (scores: (B, h, N, C, P)).
    read = layout.positions((scores * intra_weights(decay, exponents)) @ v_block)
    if multi:  # earlier chunks through their carried summaries
        if decay is None:
            inter = phi_q_chunks @ _carried_states(phi_k_block, v_block, None)[1]
        else:
            key_scale, query_scale, carry = carry_weights(decay, exponents)
            carried = _carried_states(phi_k_block * key_scale, v_block, carry)[1]
            inter = (phi_q_chunks @ carried) * query_scale
        read = read + layout.positions(inter)
    if own_weight is not None:  # own (partial) block: one slot per query, elementwise (weight a_t: (B, h, Tp, 1))
        read = read + own_weight * values
    return read


def _group_forward(q, k, v, decay, layout: ChunkLayout, feature_map, eps, divide):
    """One rate group's output ``(B, h, N C, Dv)`` and normaliser ``(B, h, N C, 1)`` (None without ``divide``) from
    q, k and v padded to whole chunks, in the accumulation dtype."""
    k_running, v_running = running_block_means(k, layout.rate), running_block_means(v, layout.rate)
    read = _numerator_and_sum(q, k_running, v_running, decay, layout, feature_map)
    del k_running, v_running
    if not divide:
        return read[..., :-1], None
    normaliser = read[..., -1:] + eps
    return read[..., :-1] / normaliser, normaliser


def _group_backward(q, k, v, decay, normaliser, out, grad, layout: ChunkLayout, feature_map, decay_gradient: bool):
    """``dL/dq``, ``dL/dk``, ``dL/dv`` and ``dL/d block_decay`` (None unless ``decay_gradient``) of one rate
    group's :func:`_group_forward` from ``grad`` = ``dL/d out``, recomputing the running means, the features,
    the chunk summaries and the scores (docs/method.md gives the formulas)."""
    k_running, v_running = running_block_means(k, layout.rate), running_block_means(v, layout.rate)
    through = FEATURE_MAP_BACKWARDS[feature_map]
    if normaliser is None:  # dL/d[numerator | normaliser]
        grad_read = F.pad(grad, (0, 1))
    else:
        grad_numerator = grad / normaliser
        grad_read = torch.cat([grad_numerator, -(grad_numerator * out).sum(dim=-1, keepdim=True)], dim=-1)
        del grad_numerator
    values = with_ones(v_running)
    phi_q, phi_k_running = feature_map(q), feature_map(k_running)
    exponents = decay_exponents(layout, q.dtype, q.device)
    grad_decay = torch.zeros_like(decay) if decay is not None and decay_gradient else None
    q_chunks, grad_chunks = layout.chunks(phi_q), layout.chunks(grad_read)
    phi_k_block, v_block = layout.block_ends(phi_k_running), layout.block_ends(values)

    # blocks of the same chunk: read += (S * W) v_block, S = phi(q) phi(k_block)^T
    scores = q_chunks @ phi_k_block.transpose(3, 4)  # (B, h, N, C, P)
    weights = intra_weights(decay, exponents)
    grad_weighted = grad_chunks @ v_block.transpose(3, 4)
    if grad_decay is not None:
        grad_decay += decay_powers_backward(decay, exponents.intra, (grad_weighted * scores).sum(dim=(0, 2)))
    grad_v_block = scores.mul_(weights).transpose(3, 4) @ grad_chunks  # (B, h, N, P, Dv + 1)
    grad_scores = grad_weighted.mul_(weights)
    del scores, grad_weighted
    grad_q_chunks = grad_scores @ phi_k_block  # (B, h, N, C, F)
    grad_k_block = grad_scores.transpose(3, 4) @ q_chunks  # (B, h, N, P, F)
    del grad_scores

    if layout.num_chunks > 1:  # earlier chunks: read += (phi(q) carried) g^query
        keys, key_scale, query_scale, carry = phi_k_block, None, None, None
        if decay is not None:
            key_scale, query_scale, carry = carry_weights(decay, exponents)
            keys = phi_k_block * key_scale
        summary, carried = _carried_states(keys, v_block, carry)
        grad_from_carried = grad_chunks @ carried.transpose(3, 4)  # (B, h, N, C, F), before the query scale
        del carried
        scaled_grad = grad_chunks if query_scale is None else grad_chunks * query_scale
        grad_carried = q_chunks.transpose(3, 4) @ scaled_grad  # (B, h, N, F, Dv + 1)
        if carry is None:
            grad_q_chunks += grad_from_carried
            grad_summary = exclusive_suffix_sum(grad_carried, dim=2)
        else:
            grad_q_chunks.addcmul_(grad_from_carried, query_scale)
            grad_summary = per_head_product(carry.transpose(1, 2), grad_carried.flatten(3))
            grad_summary = grad_summary.reshape(grad_carried.shape)
            if grad_decay is not None:
                grad_query = (grad_from_carried * q_chunks).sum(dim=(0, 2, 4))  # (h, C)
                grad_carry = (grad_carried.flatten(3) @ summary.flatten(3).transpose(2, 3)).sum(dim=0)
                grad_decay += decay_powers_backward(decay, exponents.query, grad_query)
                grad_decay += decay_powers_backward(decay, exponents.carry, grad_carry)
        del grad_from_carried, grad_carried, summary
        grad_v_block += keys @ grad_summary
        grad_keys = v_block @ grad_summary.transpose(3, 4)  # (B, h, N, P, F)
        if key_scale is None:
            grad_k_block += grad_keys
        else:
            grad_k_block.addcmul_(grad_keys, key_scale)
            if grad_decay is not None:
                grad_key = (grad_keys * phi_k_block).sum(dim=(0, 2, 4))  # (h, P)
                grad_decay += decay_powers_backward(decay, exponents.key, grad_key)
        del grad_keys

    grad_phi_q = layout.positions(grad_q_chunks)
    if layout.own_slot:  # own block: read += a_t [v~_t, 1], a_t = phi(q_t).phi(k~_t)
        own_weight = (phi_q * phi_k_running).sum(dim=-1, keepdim=True)
        grad_own = (grad_read * values).sum(dim=-1, keepdim=True)
        grad_values = grad_read * own_weight
        grad_phi_q.addcmul_(grad_own, phi_k_running)
        grad_phi_k_running = grad_own * phi_q
        rate = layout.rate
        grad_phi_k_running[:, :, rate - 1 :: rate] += layout.positions(grad_k_block)
        grad_values[:, :, rate - 1 :: rate] += layout.positions(grad_v_block)
    else:  # every position is a block end
        grad_phi_k_running, grad_values = layout.positions(grad_k_block), layout.positions(grad_v_block)
    grad_q = through(q, phi_q, grad_phi_q)
    grad_k = running_block_means_backward(through(k_running, phi_k_running, grad_phi_k_running), layout.rate)
    grad_v = running_block_means_backward(grad_values[..., :-1], layout.rate)
    return grad_q, grad_k, grad_v, grad_decay


def _padded(x: torch.Tensor, length: int, dtype: torch.dtype, value: float = 0.0) -> torch.Tensor:
    """``x`` ``(B, h, T, W)`` in ``dtype``, padded with ``value`` to ``length`` positions (a view when none are
    needed and the dtype is x's)."""
    x = x.to(dtype)
    return x if x.size(2) == length else F.pad(x, (0, 0, 0, length - x.size(2)), value=value)


def chunk_groups(head_rates: Sequence[int], seq_len: int, chunk_size: int) -> Tuple[Tuple[slice, ChunkLayout], ...]:
    """Each run of heads that share a rate, and how the op cuts its sequence (:func:`chunk_length`)."""
    groups = []
    for rate, heads in head_groups(head_rates):
        if chunk_size % rate:
            raise ValueError(f"chunk size {chunk_size} is not a multiple of rate {rate}")
        length = chunk_length(seq_len, rate, chunk_size)
        groups.append((heads, ChunkLayout(rate, length, block_count(seq_len, length))))
    return tuple(groups)


def _heads_forward(q, k, v, groups, decay, feature_map, eps, divide):
    """Every group's :func:`_group_forward` (which autograd can differentiate, for maps without a formula
    backward), written into one time-major output (:func:`.heads.heads_buffer`, accumulation dtype) and one
    normaliser ``(B, H, T, 1)`` (None without ``divide``)."""
    acc = accumulation_dtype(q.dtype)
    batch, heads, seq_len, _ = q.shape
    out = heads_buffer(batch, heads, seq_len, v.size(-1), acc, q.device)
    normaliser = torch.empty(batch, heads, seq_len, 1, dtype=acc, device=q.device) if divide else None
    for group, layout in groups:
        padded_len = layout.num_chunks * layout.chunk_size
        qg, kg, vg = (_padded(x[:, group], padded_len, acc) for x in (q, k, v))
        group_decay = None if decay is None else decay[group].to(acc)
        group_out, group_normaliser = _group_forward(qg, kg, vg, group_decay, layout, feature_map, eps, divide)
        if divide:
            normaliser[:, group] = group_normaliser[:, :, :seq_len]
        out[:, group] = group_out[:, :, :seq_len]
    return out, normaliser


def _write_group_gradients(targets, group: slice, pieces, seq_len: int) -> None:
    """Writes one group's ``dL/dq``, ``dL/dk``, ``dL/dv`` (padded to whole chunks) into the whole gradients."""
    for target, piece in zip(targets, pieces):
        target[:, group] = piece[:, :, :seq_len]


class _ChunkedCausal(torch.autograd.Function):
    """:func:`_heads_forward` with every group's backward pass written out (:func:`_group_backward`, feature maps
    of :func:`.feature_maps.has_formula_backward`). It keeps its inputs (in the model the stacked q/k/v
    projection, whose head views q, k and v are), the normaliser and the output, and writes every group's
    gradients into whole tensors (one for the stacked projection: :class:`.heads.QKVInputs`), where autograd
    would concatenate the groups' gradients, then those of q, k and v."""

    @staticmethod
    def forward(ctx, layout, groups, decay, feature_map, eps, divide, reuse_input, *inputs):
        out, normaliser = _heads_forward(*layout.unpack(inputs), groups, decay, feature_map, eps, divide)
        ctx.layout, ctx.groups, ctx.feature_map = layout, groups, feature_map
        ctx.inputs = [(x.shape, x.dtype) for x in inputs]
        ctx.reuse_input = reuse_input
        ctx.save_for_backward(decay, normaliser, out if divide else None, *inputs)
        return out

    @staticmethod
    def backward(ctx, grad):
        refuse_second_backward(ctx)
        decay, normaliser, out, *inputs = ctx.saved_tensors
        q, k, v = ctx.layout.unpack(inputs)
        acc, seq_len = accumulation_dtype(q.dtype), q.size(2)
        decay_gradient = decay is not None and ctx.needs_input_grad[2]
        grad_decay = torch.zeros_like(decay, dtype=acc) if decay_gradient else None
        shapes = [shape for shape, _ in ctx.inputs]
        # With reuse_input the whole gradient is the packed input's own memory, and each group's gradients go
        # there as soon as they are formed: they cover only the group's own columns of q, k and v, which no
        # other group reads. Otherwise every group's gradients come first, then the whole gradients: in the
        # time-major layout each group's rows touch every page of them, which, allocated first, would be
        # resident next to every group's temporaries.
        grads = ctx.layout.gradient_buffers(shapes, acc, grad.device, inputs[0]) if ctx.reuse_input else None
        group_grads = []
        for group, layout in ctx.groups:
            length = layout.num_chunks * layout.chunk_size
            pieces = _group_backward(
                *(_padded(x[:, group], length, acc) for x in (q, k, v)),
                None if decay is None else decay[group].to(acc),
                None if normaliser is None else _padded(normaliser[:, group], length, acc, value=1.0),
                None if out is None else _padded(out[:, group], length, acc),
                _padded(grad[:, group], length, acc), layout, ctx.feature_map, decay_gradient,
            )
            if decay_gradient:
                grad_decay[group] = pieces[3]
            if grads is not None:
                _write_group_gradients(grads[1], group, pieces[:3], seq_len)
            else:
                group_grads.append((group, pieces[:3]))
        if grads is None:
            grads = ctx.layout.gradient_buffers(shapes, acc, grad.device)
            for group, pieces in group_grads:
                _write_group_gradients(grads[1], group, pieces, seq_len)
        grads = grads[0]
        grad_decay = None if grad_decay is None else grad_decay.to(decay.dtype)
        return (None, None, grad_decay, None, None, None, None,
                *(d.to(dtype) for d, (_, dtype) in zip(grads, ctx.inputs)))


def causal_heads(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    head_rates: Sequence[int],
    chunk_size: int = 64,
    feature_map: FeatureMap = elu_plus_one,
    eps: float = 1e-6,
    divide: bool = True,
    block_decay: Optional[torch.Tensor] = None,
    packed: Optional[torch.Tensor] = None,
    reuse_packed: bool = False,
) -> torch.Tensor:
    """Causal AdaMRA attention of all heads, chunked, each head at its rate.

    Args:
        q, k: ``(B, H, T, D)``; v: ``(B, H, T, Dv)``, left-aligned rows; head_rates: the rate of each head.
        chunk_size: C, a positive multiple of every rate: the shortest chunk (:func:`chunk_length`).
        divide: divide by the kernel normaliser (else return the numerator).
        block_decay: ``(H,)`` decay g per complete block of distance, or None (no decay).
        packed: the time-major tensor whose :func:`.heads.time_major_heads` q, k and v are, if any (its
            gradient is then one tensor, written over ``packed`` itself if ``reuse_packed`` and
            :func:`.heads.reusable_for_gradient` allows: pass it only when nothing reads ``packed`` after this op).
    Returns:
        ``(B, H, T, Dv)`` in q's dtype, laid out time-major (:func:`.heads.heads_buffer`). With a feature map of
        :func:`.feature_maps.has_formula_backward` the backward pass is :class:`_ChunkedCausal`'s.
    """
    groups = chunk_groups(head_rates, q.size(2), chunk_size)
    if has_formula_backward(feature_map) and wants_gradients(q, k, v, block_decay):
        layout, inputs = qkv_inputs(q, k, v, packed)
        reuse = reuse_packed and reusable_for_gradient(packed, accumulation_dtype(q.dtype))
        out = _ChunkedCausal.apply(layout, groups, block_decay, feature_map, eps, divide, reuse, *inputs)
    else:
        out = _heads_forward(q, k, v, groups, block_decay, feature_map, eps, divide)[0]
    return out.to(q.dtype)


def causal_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rate: int,
    chunk_size: int = 64,
    feature_map: FeatureMap = elu_plus_one,
    eps: float = 1e-6,
    divide: bool = True,
    block_decay: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Causal AdaMRA attention of one rate group: :func:`causal_heads` with every head at ``rate``.

    Args:
        q, k: ``(B, h, T, D)``; v: ``(B, h, T, Dv)``, left-aligned rows.
        rate: block size r; chunk_size: C, a positive multiple of r: the shortest chunk (:func:`chunk_length`).
        divide: divide by the kernel normaliser (else return the numerator).
        block_decay: ``(h,)`` decay g per complete block of distance, or None (no decay).
    Returns:
        ``(B, h, T, Dv)`` in q's dtype.
    """
    return causal_heads(q, k, v, (rate,) * q.size(1), chunk_size, feature_map, eps, divide, block_decay)
