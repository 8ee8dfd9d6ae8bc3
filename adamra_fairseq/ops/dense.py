"""AdaMRA attention of all heads at once, in dense form: the fast path for short inputs.

The per-group ops (:mod:`.bidirectional`, :mod:`.causal`) loop over rate
groups, move each row's tokens to the front before pooling and, for causal
attention, run the chunked scan. At MT sentence lengths (tens of tokens)
their many small operations and copies cost more than the arithmetic. Here:

* bidirectional (:func:`bidirectional_dense`): each rate group pools its keys
  and values with one product by a ``(B, 1, M, S)`` pooling matrix
  (:func:`.pooling.pooling_matrix`; blocks counted from each row's first real token,
  so any padding layout works without reordering), then reads the blocks in
  the quadratic form ``(phi(q) phi(kbar)^T) vbar``; rate 1 needs no pooling
  (the order of the slots does not matter to a bidirectional read);
* causal (:func:`causal_dense`, left-aligned rows): every head's running
  block means ``ktilde_t``, ``vtilde_t`` as one product with a fixed
  ``(H, T, T)`` averaging matrix (:func:`causal_matrices`), then one
  ``(B, H, T, T)`` weight matrix ``phi(q_t).phi(ktilde_u)`` times a fixed
  per-head mask: 1 on the diagonal (the own block, whose mean at t is
  ``ktilde_t``) and ``g^(b - j)`` at the last position u of each complete
  block j < b (where ``ktilde_u`` is that block's mean); 0 elsewhere.

Both are quadratic in the length (as softmax attention is), so the model
takes them only for short inputs (:func:`dense_is_cheaper`) and the linear
per-group ops beyond. Same numbers as those ops, up to rounding (tested
against them and the naive reference).

Training takes a backward pass written out by hand (:class:`_BidirectionalDense`,
:class:`_CausalDense`) for the feature maps whose derivative is a formula of
their output (Hedgehog's softmax pair, elu + 1, relu): it keeps the features,
the scores, the row sums and the values, writes every group's gradients into
whole tensors (autograd would split q, k and v by group and concatenate their
gradients), and costs fewer, larger operations than autograd's graph. With
x = phi(q) phi(k)^T times the weight W (filled blocks, the causal mask),
w = x / (sum x + eps) per query and o = w v, for ``g = dL/do``:

    dL/dw = g v^T,   dL/dv = w^T g,   dL/d(xW) = (dL/dw - <dL/dw, w>) / (sum x + eps),
    dL/dphi(q) = (dL/d(xW) W) phi(k),   dL/dphi(k) = (dL/d(xW) W)^T phi(q),   dL/dW = dL/d(xW) x.

Outputs are laid out time-major (:func:`heads_buffer`), as fairseq's output
projection reads them.
"""

from functools import lru_cache
from typing import NamedTuple, Optional, Sequence, Tuple

import torch

from .bidirectional import accumulation_dtype, kernel_weights
from .causal import per_head_product, without_negligible
from .feature_maps import DOT_PRODUCT_KERNELS, FEATURE_MAP_BACKWARDS, FeatureMap, elu_plus_one, has_formula_backward
from .heads import head_groups, heads_buffer, qkv_inputs
from .pooling import block_count, pooling_matrix
from .recompute import wants_gradients

# Longest input (keys or queries) for which the model takes the dense form: on a 2-core CPU the dense
# form was faster up to 256 tokens and slower from 512 (batches of equal token counts; docs/benchmarks.md).
DENSE_MAX_LENGTH = 256


# Causal attention also needs a small batch for the dense form: its (B, H, T, T) weights cost B T^2 per head,
# where the chunked op (which has its own backward pass) costs B T C / r. One decoder layer's training step,
# 2 cores: dense and chunked tied at 24 x 160 tokens, the chunked op was 1.27x faster at 21 x 192 and 1.47x
# at 16 x 256, the dense form 1.25x faster for one row of 256 (docs/benchmarks.md).
DENSE_CAUSAL_MAX_WORK = 2 ** 19


def dense_is_cheaper(src_len: int, tgt_len: int) -> bool:
    """Whether the model should use the dense form for ``tgt_len`` queries over ``src_len`` keys."""
    return max(src_len, tgt_len) <= DENSE_MAX_LENGTH


def causal_dense_is_cheaper(batch: int, length: int) -> bool:
    """Whether the model should use the dense form for causal attention over ``batch`` rows of ``length``."""
    return length <= DENSE_MAX_LENGTH and batch * length * length <= DENSE_CAUSAL_MAX_WORK


class ReadSaved(NamedTuple):
    """What the backward pass of :func:`_read` needs: the features ``phi(q)`` ``(B, h, T, F)`` and ``phi(k)``
    ``(B, h, M, F)``, the scores ``phi(q) phi(k)^T`` before the weight, the weight (None: 1), the row sums
    of the weighted scores + eps (None without ``divide``) and the values ``(B, h, M, Dv)``."""
    phi_q: Optional[torch.Tensor]
    phi_k: Optional[torch.Tensor]
    scores: torch.Tensor
    weight: Optional[torch.Tensor]
    normaliser: Optional[torch.Tensor]
    values: torch.Tensor


def _read(phi_q, phi_k, weight, values, eps, divide, dot_kernel=None, q=None, k=None):
    """``(B, h, T, Dv)``: the scores ``phi(q) phi(k)^T`` times ``weight`` (1/0 for filled blocks, the causal mask;
    None: 1), divided by their row sums + eps if ``divide`` (first when they are the smaller tensor, M <= Dv),
    times ``values``; and its :class:`ReadSaved`. With a ``dot_kernel`` the scores come from ``q.k`` instead."""
    scores = phi_q @ phi_k.transpose(-1, -2) if dot_kernel is None else kernel_weights(q, k, dot_kernel)
    weighted = scores if weight is None else scores * weight
    normaliser = weighted.sum(dim=-1, keepdim=True) + eps if divide else None
    if normaliser is None:
        out = weighted @ values
    elif weighted.size(-1) <= values.size(-1):
        out = (weighted / normaliser) @ values
    else:
        out = (weighted @ values) / normaliser
    return out, ReadSaved(phi_q, phi_k, scores, weight, normaliser, values)


def _read_backward(saved: ReadSaved, grad: torch.Tensor, weight_gradient: bool):
    """Gradients of :func:`_read`'s output (``grad`` ``(B, h, T, Dv)``) with respect to the scores
    ``phi(q) phi(k)^T`` (``dL/dphi(q)`` is this times ``phi(k)``, ``dL/dphi(k)`` its transpose times ``phi(q)``:
    left to the caller, so that each F-wide gradient is alive only until the feature map's backward pass has
    read it), the values and (if ``weight_gradient``, else None) the weight, before any broadcast is summed."""
    weighted = saved.scores if saved.weight is None else saved.scores * saved.weight
    weights = weighted if saved.normaliser is None else weighted / saved.normaliser
    d_weights = grad @ saved.values.transpose(-1, -2)
    d_values = weights.transpose(-1, -2) @ grad
    if saved.normaliser is not None:  # w = s / (sum s + eps): ds = (dw - <dw, w>) / (sum s + eps) per query
        d_weights = (d_weights - (d_weights * weights).sum(dim=-1, keepdim=True)) / saved.normaliser
    d_weight = d_weights * saved.scores if weight_gradient else None
    d_scores = d_weights if saved.weight is None else d_weights * saved.weight
    return d_scores, d_values, d_weight


def _bidirectional_forward(q, k, v, head_rates, key_padding_mask, feature_map, eps, divide):
    """The dense bidirectional form: the output (a :func:`heads_buffer`, in q's dtype) and, per rate group,
    ``(heads, pooling matrix or None, ReadSaved)``."""
    acc = accumulation_dtype(q.dtype)
    batch, heads, src_len, _ = k.shape
    real = (torch.ones(batch, src_len, dtype=torch.bool, device=k.device) if key_padding_mask is None
            else ~key_padding_mask)
    token_filled = None if key_padding_mask is None else real[:, None, None, :].to(acc)  # rate 1: the real tokens
    dot_kernel = feature_map if feature_map in DOT_PRODUCT_KERNELS else None
    out = heads_buffer(batch, heads, q.size(2), v.size(-1), acc, q.device)
    groups = []
    for rate, group in head_groups(head_rates):
        qg, kg, vg = q[:, group].to(acc), k[:, group].to(acc), v[:, group].to(acc)
        pool, filled = None, token_filled
        if rate == 1:  # read twice (kept for the backward pass too): one copy instead of one per product
            vg = vg.contiguous()
        else:
            pool, filled = pooling_matrix(real, rate, block_count(src_len, rate), acc)
            kg, vg = pool @ kg, pool @ vg
        phi_q, phi_k = (None, None) if dot_kernel else (feature_map(qg), feature_map(kg))
        out[:, group], saved = _read(phi_q, phi_k, filled, vg, eps, divide, dot_kernel, qg, kg)
        groups.append((group, pool, saved))
    return out.to(q.dtype), groups


class _BidirectionalDense(torch.autograd.Function):
    """:func:`_bidirectional_forward` with a backward pass by formula: every group's gradients are written into
    whole tensors (one per input, or the packed input's: :class:`.heads.QKVInputs`), where autograd would split the
    inputs by group and concatenate the gradients; only the features, scores, normalisers and pooled values
    are kept."""

    @staticmethod
    def forward(ctx, layout, head_rates, key_padding_mask, feature_map, eps, divide, *inputs):
        q, k, v = layout.unpack(inputs)
        out, groups = _bidirectional_forward(q, k, v, head_rates, key_padding_mask, feature_map, eps, divide)
        ctx.save_for_backward(*(tensor for _, pool, saved in groups for tensor in (pool, *saved)))
        ctx.groups = [group for group, _, _ in groups]
        ctx.layout, ctx.feature_map, ctx.inputs = layout, feature_map, [(x.shape, x.dtype) for x in inputs]
        return out

    @staticmethod
    def backward(ctx, grad):
        feature_backward = FEATURE_MAP_BACKWARDS[ctx.feature_map]
        tensors, width = ctx.saved_tensors, 1 + len(ReadSaved._fields)
        grad = grad.to(tensors[-1].dtype)  # the values, in the accumulation dtype
        grads, (dq, dk, dv) = ctx.layout.gradient_buffers([shape for shape, _ in ctx.inputs], grad.dtype, grad.device)
        for index, group in enumerate(ctx.groups):
            pool, saved = tensors[index * width], ReadSaved(*tensors[index * width + 1:(index + 1) * width])
            # one copy of the group's slice for the two products that read it
            d_scores, d_values, _ = _read_backward(saved, grad[:, group].contiguous(), False)
            dq[:, group] = feature_backward(None, saved.phi_q, d_scores @ saved.phi_k)
            d_keys = feature_backward(None, saved.phi_k, d_scores.transpose(-1, -2) @ saved.phi_q)
            if pool is not None:  # through the block means
                d_keys, d_values = pool.transpose(-1, -2) @ d_keys, pool.transpose(-1, -2) @ d_values
            dk[:, group], dv[:, group] = d_keys, d_values
        return (None,) * 6 + tuple(d.to(dtype) for d, (_, dtype) in zip(grads, ctx.inputs))


def bidirectional_dense(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    head_rates: Sequence[int],
    key_padding_mask: Optional[torch.Tensor] = None,
    feature_map: FeatureMap = elu_plus_one,
    eps: float = 1e-6,
    divide: bool = True,
    packed: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Non-causal AdaMRA attention of all heads, as :func:`.bidirectional.bidirectional_attention` per group.

    q ``(B, H, T, N)``, k ``(B, H, S, N)``, v ``(B, H, S, Dv)``, head_rates: the rate of each head,
    key_padding_mask ``(B, S)`` (True = pad, any layout) -> ``(B, H, T, Dv)`` in q's dtype, laid out
    time-major (:func:`heads_buffer`). With gradients and a feature map of :func:`has_formula_backward`, the
    backward pass is :class:`_BidirectionalDense`'s (one gradient for ``packed``, the time-major tensor whose
    :func:`.heads.time_major_heads` q, k and v are, when given); else autograd's.
    """
    if wants_gradients(q, k, v) and has_formula_backward(feature_map):
        layout, inputs = qkv_inputs(q, k, v, packed)
        return _BidirectionalDense.apply(layout, tuple(head_rates), key_padding_mask, feature_map, eps, divide,
                                         *inputs)
    return _bidirectional_forward(q, k, v, head_rates, key_padding_mask, feature_map, eps, divide)[0]


# The fixed matrices of the causal form, per (length, rates, dtype, device): five (H, T, T) tensors, e.g.
# 10 MB for 8 heads at 256 tokens in fp32; a training run meets at most a few hundred lengths.
@lru_cache(maxsize=16)
def _causal_matrices(length: int, rates: Tuple[int, ...], dtype: torch.dtype, device: torch.device):
    """Running-mean matrix, the diagonal (own block), the last positions of the complete blocks before each
    query's block (1/0), how many blocks back those lie, and the mask without decay (diagonal + those
    positions): each ``(H, T, T)`` in ``dtype``."""
    head_rates = torch.tensor(rates, device=device)[:, None, None]
    query = torch.arange(length, device=device)[None, :, None]
    key = torch.arange(length, device=device)[None, None, :]
    own_block = (key <= query) & (key >= query // head_rates * head_rates)
    running = own_block.double() / own_block.sum(dim=-1, keepdim=True).double()
    blocks_back = query // head_rates - key // head_rates
    earlier = ((key + 1) % head_rates == 0) & (blocks_back > 0)
    own = (query == key).expand(len(rates), -1, -1)
    return tuple(part.to(dtype) for part in (running, own, earlier, blocks_back.clamp(min=0), own | earlier))


def causal_matrices(length: int, head_rates: Sequence[int], dtype: torch.dtype, device: torch.device,
                    block_decay: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``(H, T, T)`` running-mean matrix (its product with ``x`` ``(B, H, T, D)`` gives, for each head of
    rate r, the mean of x over positions ``(t // r) * r .. t``) and the weight mask of the causal form
    (see the module docstring), with the decay ``g^(b - j)`` if ``block_decay`` ``(H,)`` is given."""
    running, own, earlier, blocks_back, undecayed = _causal_matrices(
        length, tuple(int(rate) for rate in head_rates), dtype, device
    )
    if block_decay is None:
        return running, undecayed
    return running, own + without_negligible(earlier * block_decay.to(dtype)[:, None, None] ** blocks_back)


def _causal_forward(q, k, v, running, mask, feature_map, eps, divide):
    """The dense causal form (see :func:`causal_dense`) from its fixed matrices: the output (a :func:`heads_buffer`,
    in q's dtype) and its :class:`ReadSaved`."""
    acc = running.dtype
    # keys and values: the running means; the values contiguous, as the products that read them need them
    queries, keys = q.to(acc), per_head_product(running, k.to(acc))
    values = per_head_product(running, v.to(acc)).contiguous()
    dot_kernel = feature_map if feature_map in DOT_PRODUCT_KERNELS else None
    phi_q, phi_k = (None, None) if dot_kernel else (feature_map(queries), feature_map(keys))
    batch, heads, length, _ = q.shape
    out = heads_buffer(batch, heads, length, v.size(-1), acc, q.device)
    out[...], saved = _read(phi_q, phi_k, mask, values, eps, divide, dot_kernel, queries, keys)
    return out.to(q.dtype), saved


class _CausalDense(torch.autograd.Function):
    """:func:`_causal_forward` with a backward pass by formula, keeping the features, the unmasked scores, the
    normalisers and the running means of the values (and returning the mask's gradient, through which a
    learned decay is trained)."""

    @staticmethod
    def forward(ctx, layout, running, mask, feature_map, eps, divide, *inputs):
        out, saved = _causal_forward(*layout.unpack(inputs), running, mask, feature_map, eps, divide)
        ctx.save_for_backward(running, *saved)
        ctx.layout, ctx.feature_map, ctx.inputs = layout, feature_map, [(x.shape, x.dtype) for x in inputs]
        return out

    @staticmethod
    def backward(ctx, grad):
        feature_backward = FEATURE_MAP_BACKWARDS[ctx.feature_map]
        running, *saved = ctx.saved_tensors
        saved, means_back = ReadSaved(*saved), running.transpose(-1, -2)
        d_scores, d_values, d_mask = _read_backward(saved, grad.to(saved.values.dtype), ctx.needs_input_grad[2])
        grads, (dq, dk, dv) = ctx.layout.gradient_buffers([shape for shape, _ in ctx.inputs], running.dtype,
                                                          grad.device)
        dv[...] = per_head_product(means_back, d_values)
        del d_values  # each temporary is freed before the next is made
        dq[...] = feature_backward(None, saved.phi_q, d_scores @ saved.phi_k)
        d_keys = feature_backward(None, saved.phi_k, d_scores.transpose(-1, -2) @ saved.phi_q)
        dk[...] = per_head_product(means_back, d_keys)
        d_mask = None if d_mask is None else d_mask.sum(dim=0)
        return (None, None, d_mask, None, None, None, *(d.to(dtype) for d, (_, dtype) in zip(grads, ctx.inputs)))


def causal_dense(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    head_rates: Sequence[int],
    feature_map: FeatureMap = elu_plus_one,
    eps: float = 1e-6,
    divide: bool = True,
    block_decay: Optional[torch.Tensor] = None,
    packed: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Causal AdaMRA attention of all heads, as :func:`.causal.causal_attention` per group.

    Args:
        q, k: ``(B, H, T, N)``; v: ``(B, H, T, Dv)``, left-aligned rows (trailing pads need no mask).
        head_rates: the rate of each head; block_decay: ``(H,)`` g per block of distance, or None.
        packed: optional time-major tensor whose :func:`.heads.time_major_heads` are q, k and v (the backward pass
            then returns its gradient as one tensor).
    Returns:
        ``(B, H, T, Dv)`` in q's dtype, laid out time-major (:func:`heads_buffer`). With gradients and a
        feature map of :func:`has_formula_backward`, the backward pass is :class:`_CausalDense`'s.
    """
    acc = accumulation_dtype(q.dtype)
    running, mask = causal_matrices(q.size(2), head_rates, acc, q.device, block_decay)
    if wants_gradients(q, k, v, mask) and has_formula_backward(feature_map):
        layout, inputs = qkv_inputs(q, k, v, packed)
        return _CausalDense.apply(layout, running, mask, feature_map, eps, divide, *inputs)
    return _causal_forward(q, k, v, running, mask, feature_map, eps, divide)[0]
