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
"""

from functools import lru_cache
from typing import List, Optional, Sequence, Tuple

import torch

from .bidirectional import accumulation_dtype, kernel_weights
from .feature_maps import FeatureMap, elu_plus_one
from .pooling import block_count, pooling_matrix

# Longest input (keys or queries) for which the model takes the dense form: on a 2-core CPU the dense
# form was faster up to 256 tokens and slower from 512 (batches of equal token counts; docs/benchmarks.md).
DENSE_MAX_LENGTH = 256


def dense_is_cheaper(src_len: int, tgt_len: int) -> bool:
    """Whether the model should use the dense form for ``tgt_len`` queries over ``src_len`` keys."""
    return max(src_len, tgt_len) <= DENSE_MAX_LENGTH


def rate_groups(head_rates: Sequence[int]) -> List[Tuple[int, int]]:
    """``(rate, heads)`` of each run of consecutive heads that share a rate, in head order."""
    groups: List[Tuple[int, int]] = []
    for rate in head_rates:
        if groups and groups[-1][0] == rate:
            groups[-1] = (rate, groups[-1][1] + 1)
        else:
            groups.append((int(rate), 1))
    return groups


def weighted_read(weights: torch.Tensor, v: torch.Tensor, eps: float, divide: bool) -> torch.Tensor:
    """``weights @ v`` ``(..., T, M) x (..., M, Dv)``, divided by the row sums of ``weights`` (+ eps) if
    ``divide``: the weights are divided first when they are the smaller tensor (M <= Dv, MT sentences),
    which costs less and keeps less for the backward pass."""
    if not divide:
        return weights @ v
    normaliser = weights.sum(dim=-1, keepdim=True) + eps
    if weights.size(-1) <= v.size(-1):
        return (weights / normaliser) @ v
    return (weights @ v) / normaliser


def bidirectional_dense(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    head_rates: Sequence[int],
    key_padding_mask: Optional[torch.Tensor] = None,
    feature_map: FeatureMap = elu_plus_one,
    eps: float = 1e-6,
    divide: bool = True,
) -> torch.Tensor:
    """Non-causal AdaMRA attention of all heads, as :func:`.bidirectional.bidirectional_attention` per group.

    q ``(B, H, T, N)``, k ``(B, H, S, N)``, v ``(B, H, S, Dv)``, head_rates: the rate of each head,
    key_padding_mask ``(B, S)`` (True = pad, any layout) -> ``(B, H, T, Dv)`` in q's dtype.
    """
    acc = accumulation_dtype(q.dtype)
    batch, _, src_len, _ = k.shape
    real = (torch.ones(batch, src_len, dtype=torch.bool, device=k.device) if key_padding_mask is None
            else ~key_padding_mask)
    token_filled = None if key_padding_mask is None else real[:, None, None, :].to(acc)  # rate 1: the real tokens
    groups = rate_groups(head_rates)
    sizes = [heads for _, heads in groups]
    outputs = []
    for (rate, _), qg, kg, vg in zip(groups, q.to(acc).split(sizes, 1), k.to(acc).split(sizes, 1),
                                     v.to(acc).split(sizes, 1)):
        filled = token_filled
        if rate > 1:
            pool, filled = pooling_matrix(real, rate, block_count(src_len, rate), acc)
            kg, vg = pool @ kg, pool @ vg
        weights = kernel_weights(qg, kg, feature_map)
        if filled is not None:
            weights = weights * filled
        outputs.append(weighted_read(weights, vg, eps, divide))
    return torch.cat(outputs, dim=1).to(q.dtype)


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
    return running, own + earlier * block_decay.to(dtype)[:, None, None] ** blocks_back


def causal_dense(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    head_rates: Sequence[int],
    feature_map: FeatureMap = elu_plus_one,
    eps: float = 1e-6,
    divide: bool = True,
    block_decay: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Causal AdaMRA attention of all heads, as :func:`.causal.causal_attention` per group.

    Args:
        q, k: ``(B, H, T, N)``; v: ``(B, H, T, Dv)``, left-aligned rows (trailing pads need no mask).
        head_rates: the rate of each head; block_decay: ``(H,)`` g per block of distance, or None.
    Returns:
        ``(B, H, T, Dv)`` in q's dtype.
    """
    acc = accumulation_dtype(q.dtype)
    running, mask = causal_matrices(q.size(2), head_rates, acc, q.device, block_decay)
    weights = kernel_weights(q.to(acc), running @ k.to(acc), feature_map) * mask
    return weighted_read(weights, running @ v.to(acc), eps, divide).to(q.dtype)
