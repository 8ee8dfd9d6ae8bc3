"""The bidirectional state form of all heads, with a backward pass that keeps little and recomputes the features.

For the heads of one rate (queries q, block means kbar and vbar of the keys and values):

    S = phi(kbar)^T vbar,  z = phi(kbar)^T 1,  n = phi(q) S,  d = phi(q) z + eps,  o = n / d

:func:`bidirectional_state` runs every rate group in one autograd function
(:class:`_StateHeads`) and writes the output of all heads into one time-major
buffer (:func:`.heads.heads_buffer`). Autograd would keep every intermediate
for the backward pass: phi(q) and phi(kbar) (F = 2N wide for Hedgehog
features), the block means, the output; and, for q, k and v split by group,
it would concatenate the groups' gradients, then the three gradients of the
stacked projection. :class:`_StateHeads` keeps its inputs (in the model, the
stacked q/k/v projection, alive anyway until autograd frees it), each head's
``[S | z]`` and the denominator d. The backward pass recomputes the block
means and the features (an elementwise map and a sum, far cheaper than the
products) and writes every group's gradients into whole tensors (one for the
stacked projection: :class:`.heads.QKVInputs`). With ``g = dL/do`` and
``gn = g / d``:

    u = gn S^T,   dL/dd = -<phi(q), u> / d   (= -<g, o> / d, per query)
    dL/dphi(q) = u + dL/dd z^T,   [dL/dS | dL/dz] = phi(q)^T [gn | dL/dd]
    dL/dphi(kbar) = vbar dL/dS^T + 1 dL/dz^T,   dL/dvbar = phi(kbar) dL/dS

then the features' own backward pass (a formula for softmax_pair, elu + 1 and
relu; a recomputed graph for the others) and the transpose of the block means
(:func:`.pooling.unpooled`). Without the denominator (``divide=False``)
o = n and d is not formed. Everything runs in the accumulation dtype (fp32,
or fp64 for fp64 inputs).
"""

from typing import List, Optional, Sequence, Tuple

import torch

from .feature_maps import FEATURE_MAP_BACKWARDS, FeatureMap, elu_plus_one, output_width
from .heads import head_groups, heads_buffer, qkv_inputs, refuse_second_backward, reusable_for_gradient
from .pooling import BlockPartition, block_partition, pooled, unpooled
from .recompute import wants_gradients


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half/bfloat16/fp32 inputs, fp64 for fp64 inputs."""
    return torch.promote_types(dtype, torch.float32)


def without_empty_blocks(x: torch.Tensor, filled: Optional[torch.Tensor]) -> torch.Tensor:
    """``x`` ``(B, h, M, .)`` with the rows of blocks that hold no token zeroed (``filled``: ``(B, 1, 1, M)``
    1/0 weights of the blocks that hold a token, or None: every block does)."""
    return x if filled is None else x * filled.transpose(2, 3)


def block_features(feature_map: FeatureMap, k_mean: torch.Tensor, filled: Optional[torch.Tensor]) -> torch.Tensor:
    """``phi(kbar)`` ``(B, h, M, F)``, zero for blocks that hold no token (blocks past a short row's end)."""
    return without_empty_blocks(feature_map(k_mean), filled)


def _features_with_backward(feature_map: FeatureMap, x: torch.Tensor, filled: Optional[torch.Tensor]):
    """``phi(x)`` (zero for empty blocks) and a function taking ``dL/dphi`` to ``dL/dx``.

    Maps of :data:`FEATURE_MAP_BACKWARDS` are differentiated by their formula; any other map through
    a recomputed graph (a nested autograd call, which costs the process some memory the first time).
    """
    backward = FEATURE_MAP_BACKWARDS.get(feature_map)
    if backward is None:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            phi = block_features(feature_map, x, filled)
        return phi.detach(), lambda grad: torch.autograd.grad(phi, x, grad)[0]
    raw = feature_map(x)
    return without_empty_blocks(raw, filled), lambda grad: backward(x, raw, without_empty_blocks(grad, filled))


def _groups(head_rates: Sequence[int], real: Optional[torch.Tensor], keys: torch.Tensor, dtype: torch.dtype
            ) -> List[Tuple[slice, BlockPartition]]:
    """Each rate group's heads and how its keys fall into blocks."""
    batch, _, seq_len, _ = keys.shape
    return [(heads, block_partition(real, seq_len, rate, dtype, keys.device, batch))
            for rate, heads in head_groups(head_rates)]


def _block_means(k, v, group: slice, partition: BlockPartition, dtype):
    """The group's block means of the keys and of the values, in ``dtype``."""
    return pooled(k[:, group].to(dtype), partition), pooled(v[:, group].to(dtype), partition)


# Queries (and key blocks) go through the features and the products in chunks of about this many feature
# elements (all heads, all rows): 2 MB in fp32. A chunk's features are read by the next product while they are
# still in the cache, and the chunks' temporaries reuse the same memory. Whole-length temporaries were slower
# (one op at 16384 tokens: 367 against 260 ms, fastest of 5; 2^16-2^18 were slower too, 2^20 level:
# docs/benchmarks.md) and raised the peak memory.
CHUNK_FEATURE_ELEMENTS = 2 ** 19


def _chunks(length: int, per_position: int) -> List[slice]:
    """Consecutive slices of ``range(length)`` of about ``CHUNK_FEATURE_ELEMENTS / per_position`` positions."""
    step = max(1, CHUNK_FEATURE_ELEMENTS // max(per_position, 1))
    return [slice(start, min(start + step, length)) for start in range(0, length, step)]


def _group_state(feature_map, k_mean, v_mean, filled, features: int) -> torch.Tensor:
    """``[S | z]`` ``(B, h, F, Dv + 1)`` of one group from its block means, summed over chunks of blocks."""
    batch, heads, blocks, _ = k_mean.shape
    width = v_mean.size(-1)
    state = k_mean.new_zeros(batch, heads, features, width + 1)
    for chunk in _chunks(blocks, batch * heads * features):
        phi_k = block_features(feature_map, k_mean[:, :, chunk], None if filled is None else filled[..., chunk])
        state[..., :width].add_(phi_k.transpose(2, 3) @ v_mean[:, :, chunk])
        state[..., width].add_(phi_k.sum(dim=2))
    return state


def _state_forward(q, k, v, head_rates, real, feature_map, eps, divide):
    """The output (a :func:`.heads.heads_buffer` in the accumulation dtype), every head's ``[S | z]``
    ``(B, H, F, Dv + 1)`` and the denominator ``(B, H, T, 1)`` (None without ``divide``)."""
    acc = accumulation_dtype(q.dtype)
    batch, heads, length, _ = q.shape
    width, features = v.size(-1), output_width(feature_map, q.size(-1))
    state = torch.cat([
        _group_state(feature_map, *_block_means(k, v, group, partition, acc), partition.filled, features)
        for group, partition in _groups(head_rates, real, k, acc)
    ], dim=1)
    out = heads_buffer(batch, heads, length, width, acc, q.device)
    normaliser = torch.empty(batch, heads, length, 1, dtype=acc, device=q.device) if divide else None
    for chunk in _chunks(length, batch * heads * features):
        read = feature_map(q[:, :, chunk].to(acc)) @ state  # (B, H, t, Dv + 1): [n | d - eps]
        if divide:
            torch.add(read[..., width:], eps, out=normaliser[:, :, chunk])
            torch.div(read[..., :width], normaliser[:, :, chunk], out=out[:, :, chunk])
        else:
            out[:, :, chunk] = read[..., :width]
    return out, state, normaliser


class _StateHeads(torch.autograd.Function):
    """:func:`_state_forward` with the backward pass of the module docstring."""

    @staticmethod
    def forward(ctx, layout, head_rates, real, feature_map, eps, divide, reuse_input, *inputs):
        out, states, normaliser = _state_forward(*layout.unpack(inputs), head_rates, real, feature_map, eps, divide)
        ctx.save_for_backward(states, normaliser, *inputs)
        ctx.layout, ctx.head_rates, ctx.real, ctx.feature_map = layout, head_rates, real, feature_map
        ctx.inputs = [(x.shape, x.dtype) for x in inputs]
        ctx.reuse_input = reuse_input
        return out

    @staticmethod
    def backward(ctx, grad):
        refuse_second_backward(ctx)
        states, normaliser, *inputs = ctx.saved_tensors
        q, k, v = ctx.layout.unpack(inputs)
        acc, width = states.dtype, v.size(-1)
        batch, heads, length, _ = q.shape
        # With reuse_input each chunk's gradient is written over the chunk of q, k or v it was formed from, after
        # the last read of that chunk (the query pass reads only q, the key side only its group's k and v).
        reuse = inputs[0] if ctx.reuse_input else None
        grads, (dq, dk, dv) = ctx.layout.gradient_buffers([shape for shape, _ in ctx.inputs], acc, grad.device,
                                                          reuse)
        summary_t, sums = states[..., :width].transpose(2, 3), states[..., width:].transpose(2, 3)
        d_states = torch.zeros_like(states)  # [dL/dS | dL/dz]
        for chunk in _chunks(length, batch * heads * states.size(2)):
            phi_q, through_q = _features_with_backward(ctx.feature_map, q[:, :, chunk].to(acc), None)
            g = grad[:, :, chunk].to(acc)
            if normaliser is None:
                d_phi_q = g @ summary_t
                d_states[..., :width] += phi_q.transpose(2, 3) @ g
            else:
                d = normaliser[:, :, chunk]
                scaled = torch.empty(*g.shape[:-1], width + 1, dtype=acc, device=g.device)  # [gn | dL/dd]
                torch.div(g, d, out=scaled[..., :width])
                d_phi_q = scaled[..., :width] @ summary_t
                torch.div((phi_q * d_phi_q).sum(dim=-1, keepdim=True), d, out=scaled[..., width:]).neg_()
                d_phi_q.addcmul_(scaled[..., width:], sums)
                d_states += phi_q.transpose(2, 3) @ scaled
            dq[:, :, chunk] = through_q(d_phi_q)
        for group, partition in _groups(ctx.head_rates, ctx.real, k, acc):
            _key_side_backward(ctx.feature_map, *_block_means(k, v, group, partition, acc), partition,
                               d_states[:, group], dk[:, group], dv[:, group])
        return (None,) * 7 + tuple(d.to(dtype) for d, (_, dtype) in zip(grads, ctx.inputs))


def _key_side_backward(feature_map, k_mean, v_mean, partition: BlockPartition, d_state, dk, dv) -> None:
    """Writes one group's ``dL/dk`` and ``dL/dv`` (``(B, h, S, .)``, any strides) from ``[dL/dS | dL/dz]``
    ``(B, h, F, Dv + 1)``, chunk by chunk of blocks."""
    batch, heads, blocks, _ = k_mean.shape
    width, filled = v_mean.size(-1), partition.filled
    d_summary, d_sums = d_state[..., :width], d_state[..., width:].transpose(2, 3)
    direct = partition.rate == 1 and partition.block_of_token is None  # the block means are k and v themselves
    d_k_mean, d_v_mean = (dk, dv) if direct else (torch.empty_like(k_mean), torch.empty_like(v_mean))
    for chunk in _chunks(blocks, batch * heads * d_state.size(2)):
        phi_k, through_k = _features_with_backward(feature_map, k_mean[:, :, chunk],
                                                   None if filled is None else filled[..., chunk])
        # both read before either is written: dk and dv may be k's and v's own memory (reuse_input)
        d_k_chunk = through_k((v_mean[:, :, chunk] @ d_summary.transpose(2, 3)).add_(d_sums))
        d_v_mean[:, :, chunk] = phi_k @ d_summary
        d_k_mean[:, :, chunk] = d_k_chunk
    if not direct:
        unpooled(d_k_mean, partition, dk)
        unpooled(d_v_mean, partition, dv)


def bidirectional_state(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    head_rates: Sequence[int],
    key_padding_mask: Optional[torch.Tensor] = None,
    feature_map: FeatureMap = elu_plus_one,
    eps: float = 1e-6,
    divide: bool = True,
    packed: Optional[torch.Tensor] = None,
    reuse_packed: bool = False,
) -> torch.Tensor:
    """Non-causal AdaMRA attention of all heads in the state form ``phi(q) (phi(kbar)^T [vbar | 1])``.

    q ``(B, H, T, N)``, k ``(B, H, S, N)``, v ``(B, H, S, Dv)``, head_rates: the rate of each head,
    key_padding_mask ``(B, S)`` (True = pad, any layout; blocks start at each row's first real token) ->
    ``(B, H, T, Dv)`` in q's dtype, laid out time-major (:func:`.heads.heads_buffer`); normalised if
    ``divide``. ``packed``: the time-major tensor whose :func:`.heads.time_major_heads` q, k and v are, if
    any; its gradient is then one tensor, written over ``packed`` itself if ``reuse_packed`` and
    :func:`.heads.reusable_for_gradient` allows (pass it only when nothing reads ``packed`` after this op).
    With gradients the backward pass is :class:`_StateHeads`'s.
    """
    real = None if key_padding_mask is None or not bool(key_padding_mask.any()) else ~key_padding_mask
    if not wants_gradients(q, k, v):
        return _state_forward(q, k, v, head_rates, real, feature_map, eps, divide)[0].to(q.dtype)
    layout, inputs = qkv_inputs(q, k, v, packed)
    reuse = reuse_packed and reusable_for_gradient(packed, accumulation_dtype(q.dtype))
    return _StateHeads.apply(layout, tuple(head_rates), real, feature_map, eps, divide, reuse, *inputs).to(q.dtype)
