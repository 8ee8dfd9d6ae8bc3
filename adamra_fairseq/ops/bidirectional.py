"""Bidirectional kernel attention over pooled keys/values (encoder self- and cross-attention).

For one group of heads sharing a rate r:

    S = sum_j phi(kbar_j) vbar_j^T,   z = sum_j phi(kbar_j),
    o_t = phi(q_t)^T S / (phi(q_t)^T z + eps)

where kbar_j, vbar_j are means over blocks of r real tokens. S and z are kept
side by side as one ``(D, Dv + 1)`` matrix ``[S | z]`` (the values get a
column of ones), so one product gives numerator and normaliser. Time and
memory are linear in the sequence length; the summary is accumulated in at
least fp32.

The same numbers can be computed in two orders: the *state* form
``phi(q) (phi(kbar)^T [vbar | 1])`` costs ``(T + M) F (Dv + 1)`` multiply-adds
per head, the *quadratic* form ``(phi(q) phi(kbar)^T) [vbar | 1]`` costs
``T M (F + Dv + 1)``. For MT sentences (T, M ~ 30, F = 64 .. 128) the
quadratic form is several times cheaper; for long inputs the state form is
the linear one (in training it keeps less for the backward pass than autograd
would: :mod:`.state_attention`). :func:`bidirectional_attention` picks the cheaper
(``form="auto"``). Decoding caches what the cheaper form needs per query
(:func:`cached_blocks_are_cheaper`): ``[S | z]`` for :func:`attend_state`, or
the pooled keys and ``[vbar | 1]`` for :func:`attend_blocks`; either is
fixed by the source and does not grow with the output.
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .feature_maps import DOT_PRODUCT_KERNELS, FeatureMap, elu_plus_one, output_width, pair_width
from .padding import left_aligned_keys_values
from .pooling import block_count, block_means
from .state_attention import accumulation_dtype, bidirectional_state, block_features  # noqa: F401  (read from here too)


def with_ones(v: torch.Tensor) -> torch.Tensor:
    """``(..., Dv)`` -> ``(..., Dv + 1)``: values with a trailing 1, so ``phi(k)^T [v, 1] = [S | z]``."""
    return F.pad(v, (0, 1), value=1.0)


def normalise(numerator_with_sum: torch.Tensor, eps: float, divide: bool = True) -> torch.Tensor:
    """``[n | d]`` -> ``n / (d + eps)``, or ``n`` alone when ``divide`` is False (an output norm replaces the denominator)."""
    if not divide:
        return numerator_with_sum[..., :-1]
    return numerator_with_sum[..., :-1] / (numerator_with_sum[..., -1:] + eps)


FORMS = ("auto", "state", "quadratic")


def pooled_means(
    k: torch.Tensor,
    v: torch.Tensor,
    rate: int,
    key_padding_mask: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
    """Block-mean keys, which blocks hold tokens, and block-mean values.

    Args:
        k: ``(B, h, S, N)``; v: ``(B, h, S, Dv)``.
        key_padding_mask: ``(B, S)``, True = pad, or None.
    Returns:
        ``kbar`` ``(B, h, M, N)``, ``(B, 1, 1, M)`` 1/0 weights of the blocks that hold a
        token (None without padding: all do) and ``vbar`` ``(B, h, M, Dv)``, in the
        accumulation dtype.
    """
    k, v, lengths, padded = left_aligned_keys_values(k, v, key_padding_mask)
    acc = accumulation_dtype(k.dtype)
    k_mean, sizes = block_means(k.to(acc), lengths, rate, padded)
    v_mean, _ = block_means(v.to(acc), lengths, rate, padded)
    filled = (sizes > 0)[:, None, None, :].to(acc) if padded else None
    return k_mean, filled, v_mean


def pooled_keys_values(
    k: torch.Tensor,
    v: torch.Tensor,
    rate: int,
    key_padding_mask: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
    """:func:`pooled_means` with a column of ones after the values: ``[vbar | 1]`` ``(B, h, M, Dv + 1)``."""
    k_mean, filled, v_mean = pooled_means(k, v, rate, key_padding_mask)
    return k_mean, filled, with_ones(v_mean)


def form_costs(
    queries: int, blocks: int, features: int, value_width: int, pair_width: Optional[int] = None
) -> Tuple[int, int]:
    """Multiply-adds of the quadratic form ``(phi(q) phi(kbar)^T) [vbar | 1]`` and of the state form
    ``phi(q) [S | z]``, per head.

    ``pair_width``: multiply-adds per query-block weight (default ``features``; the
    key width N when a dot-product kernel gives the weights from ``q.kbar``).
    """
    pair_width = features if pair_width is None else pair_width
    return queries * blocks * (pair_width + value_width + 1), (queries + blocks) * features * (value_width + 1)


def quadratic_is_cheaper(
    queries: int, blocks: int, features: int, value_width: int, pair_width: Optional[int] = None
) -> bool:
    """True if the quadratic form takes fewer multiply-adds than the state form (:func:`form_costs`)."""
    quadratic, state = form_costs(queries, blocks, features, value_width, pair_width)
    return quadratic < state


def _rate_form_costs(queries: int, keys: int, rate: int, feature_map: FeatureMap, key_width: int,
                     value_width: int) -> Tuple[int, int]:
    """:func:`form_costs` for ``queries`` over ``keys`` pooled at ``rate``, with ``feature_map`` applied to
    ``key_width``-wide keys."""
    return form_costs(queries, block_count(keys, rate), output_width(feature_map, key_width), value_width,
                      pair_width(feature_map, key_width))


def quadratic_form_is_cheaper(queries: int, keys: int, rate: int, feature_map: FeatureMap, key_width: int,
                              value_width: int) -> bool:
    """:func:`quadratic_is_cheaper` for ``queries`` over ``keys`` pooled at ``rate``."""
    quadratic, state = _rate_form_costs(queries, keys, rate, feature_map, key_width, value_width)
    return quadratic < state


# The state form of all heads in one function (:func:`.state_attention.bidirectional_state`) is taken while its
# multiply-adds are at most this much above those of the cheaper form per rate group: it saves the groups'
# copies and concatenations. At 384 tokens (one row), where rate 8's quadratic form is 1% cheaper, one layer
# took 25.7-28.4 ms (fastest of 9-11) through the per-group forms against 23.2-26.1 ms with the code before
# the all-heads form; through the all-heads form, 20.2 against 20.2 (development probes, docs/benchmarks.md).
STATE_FORM_MARGIN = 1.1


def state_form_for_all_heads(queries: int, keys: int, rates, feature_map: FeatureMap, key_width: int,
                             value_width: int) -> bool:
    """Whether bidirectional attention of heads at ``rates`` (one entry per rate group) should take the state
    form of all heads rather than the cheaper form per group (:data:`STATE_FORM_MARGIN`)."""
    costs = [_rate_form_costs(queries, keys, rate, feature_map, key_width, value_width) for rate in rates]
    return sum(state for _, state in costs) <= STATE_FORM_MARGIN * sum(min(pair) for pair in costs)


def cached_blocks_are_cheaper(blocks: int, features: int, value_width: int, pair_width: int) -> bool:
    """True if one decoding step reads M pooled blocks (:func:`attend_blocks`) in fewer multiply-adds
    than the ``(F, Dv + 1)`` summary (:func:`attend_state`); the cache is then smaller too.

    The per-query limit of :func:`quadratic_is_cheaper` (the summary is built once, read every step).
    """
    return blocks * (pair_width + value_width + 1) < features * (value_width + 1)


def attend_state(
    q: torch.Tensor,
    summary: torch.Tensor,
    feature_map: FeatureMap = elu_plus_one,
    eps: float = 1e-6,
    divide: bool = True,
) -> torch.Tensor:
    """``phi(q) S / (phi(q) z + eps)`` (or ``phi(q) S`` if not ``divide``) for q ``(B, h, T, D)`` and ``[S | z]``.

    Returns ``(B, h, T, Dv)`` in q's dtype.
    """
    return normalise(feature_map(q.to(summary.dtype)) @ summary, eps, divide).to(q.dtype)


def kernel_weights(q: torch.Tensor, k: torch.Tensor, feature_map: FeatureMap) -> torch.Tensor:
    """``phi(q) phi(k)^T``: ``(B, h, T, N)`` and ``(B, h, M, N)`` -> ``(B, h, T, M)`` (for the
    :data:`DOT_PRODUCT_KERNELS`, from the N-wide dot products)."""
    kernel = DOT_PRODUCT_KERNELS.get(feature_map)
    if kernel is not None:
        return kernel(q @ k.transpose(-1, -2))
    return feature_map(q) @ feature_map(k).transpose(-1, -2)


def attend_blocks(
    q: torch.Tensor,
    k_mean: torch.Tensor,
    filled: Optional[torch.Tensor],
    values: torch.Tensor,
    feature_map: FeatureMap = elu_plus_one,
    eps: float = 1e-6,
    divide: bool = True,
) -> torch.Tensor:
    """Quadratic form ``(phi(q) phi(kbar)^T) [vbar | 1]``, normalised, from :func:`pooled_keys_values`'s output.

    q ``(B, h, T, N)`` -> ``(B, h, T, Dv)`` in q's dtype. For the :data:`DOT_PRODUCT_KERNELS`
    the weights come from the N-wide ``q.kbar`` and the features are never built.
    """
    weights = kernel_weights(q.to(k_mean.dtype), k_mean, feature_map)
    if filled is not None:
        weights = weights * filled
    return normalise(weights @ values, eps, divide).to(q.dtype)


def bidirectional_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rate: int,
    key_padding_mask: Optional[torch.Tensor] = None,
    feature_map: FeatureMap = elu_plus_one,
    eps: float = 1e-6,
    divide: bool = True,
    form: str = "auto",
) -> torch.Tensor:
    """Non-causal AdaMRA attention of one rate group.

    q ``(B, h, T, N)``, k ``(B, h, S, N)``, v ``(B, h, S, Dv)``,
    key_padding_mask ``(B, S)`` (True = pad) -> ``(B, h, T, Dv)``.
    ``divide``: divide by the kernel normaliser (else return the numerator).
    ``form``: ``state``, ``quadratic`` or ``auto`` (the cheaper; same result up to rounding).
    """
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}: choose one of {', '.join(FORMS)}")
    if form == "auto":
        form = "quadratic" if quadratic_form_is_cheaper(q.size(2), k.size(2), rate, feature_map, k.size(-1),
                                                        v.size(-1)) else "state"
    if form == "state":
        return bidirectional_state(q, k, v, (rate,) * q.size(1), key_padding_mask, feature_map, eps, divide)
    k_mean, filled, v_mean = pooled_means(k, v, rate, key_padding_mask)
    return attend_blocks(q, k_mean, filled, with_ones(v_mean), feature_map, eps, divide)
