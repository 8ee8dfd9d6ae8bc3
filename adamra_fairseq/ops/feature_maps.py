"""Non-negative feature maps phi that replace softmax in kernel attention.

A feature map takes ``(..., N)`` to ``(..., F)``; :func:`feature_width` gives F
for an input width N, :func:`pair_width` the cost of one weight
``phi(q).phi(k)``. The ops apply these parameter-free maps to (pooled)
queries and keys. The *learned* maps (``hedgehog``, ``t2r``) are a per-head
linear projection of q and k (a parameter of the attention module, applied
before pooling: a linear map commutes with block means) followed by the
nonlinearity registered here under the same name.
"""

import math
from functools import lru_cache, partial
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F

FeatureMap = Callable[[torch.Tensor], torch.Tensor]


def elu_plus_one(x: torch.Tensor) -> torch.Tensor:
    """phi(u) = elu(u) + 1: strictly positive (Katharopoulos et al., 2020)."""
    return F.elu(x) + 1.0


def relu(x: torch.Tensor) -> torch.Tensor:
    """phi(u) = max(u, 0): non-negative; the normaliser relies on eps when all features are 0."""
    return F.relu(x)


def dpfp(x: torch.Tensor, nu: int = 1) -> torch.Tensor:
    """Deterministic parameter-free projection (Schlag, Irie and Schmidhuber, 2021).

    With ``r = relu([x, -x])`` (width 2N), the features are the products of r
    with itself rolled by 1 .. nu places: ``(..., N)`` -> ``(..., 2 * nu * N)``,
    non-negative, and sparser (so sharper attention) than elu + 1.
    """
    r = F.relu(torch.cat([x, -x], dim=-1))
    return torch.cat([r * r.roll(shift, dims=-1) for shift in range(1, nu + 1)], dim=-1)


def _upper_triangle(width: int, device) -> torch.Tensor:
    """Flat indices ``i * N + j`` of the pairs ``i <= j`` of an N x N matrix."""
    rows, cols = torch.triu_indices(width, width, device=device)
    return rows * width + cols


def taylor2(x: torch.Tensor) -> torch.Tensor:
    """2nd-order Taylor features of exp (as in Based, Arora et al., 2024): ``phi(q).phi(k) = 1 + q.k + (q.k)^2 / 2``.

    ``(..., N)`` -> ``(..., 1 + N + N (N + 1) / 2)``: a constant, x itself, and
    the products ``x_i x_j`` for ``i <= j`` (``i == j`` divided by sqrt 2), so
    the kernel is exactly the Taylor polynomial, which is positive for every
    ``q.k`` (its minimum is 1/2).
    """
    width = x.size(-1)
    pairs = (x.unsqueeze(-1) * x.unsqueeze(-2)).flatten(-2)[..., _upper_triangle(width, x.device)]
    rows, cols = torch.triu_indices(width, width, device=x.device)
    weight = torch.ones(rows.numel(), dtype=x.dtype, device=x.device)  # in x's dtype: exact in float64 too
    weight[rows == cols] = 1 / math.sqrt(2)
    return torch.cat([torch.ones_like(x[..., :1]), x, pairs * weight], dim=-1)


@lru_cache(maxsize=None)
def _signs(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``[[1], [-1]]``, made once per dtype and device."""
    return torch.tensor([[1.0], [-1.0]], dtype=dtype, device=device)


# Inputs smaller than this (a decoding step of a few rows) build [u, -u] by one broadcast product, which is
# one operation; larger ones (training batches) by two writes into one new tensor, 1.2-1.6x faster there on
# this CPU build (at 5 rows the product took 17 us against 25 us; level at about 25,000 inputs).
HALVES_BY_PRODUCT_BELOW = 2 ** 14


def _softmax_halves(x: torch.Tensor) -> torch.Tensor:
    """``(..., N)`` -> ``(..., 2, N)``: softmax of u and of -u, side by side."""
    if x.numel() < HALVES_BY_PRODUCT_BELOW:
        return torch.softmax(x.unsqueeze(-2) * _signs(x.dtype, x.device), dim=-1)
    both = x.new_empty(*x.shape[:-1], 2, x.size(-1))
    both[..., 0, :] = x
    torch.neg(x, out=both[..., 1, :])
    return torch.softmax(both, dim=-1)


class _SoftmaxPair(torch.autograd.Function):
    """``[softmax(u), softmax(-u)]`` keeping only its output for the backward pass.

    Autograd would keep both softmax outputs and, through the product that
    reads the features next, their concatenation too: twice the memory. The
    backward pass is torch's fused softmax backward on both halves at once.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        halves = _softmax_halves(x)
        ctx.save_for_backward(halves)
        return halves.flatten(-2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (halves,) = ctx.saved_tensors
        return _softmax_pair_backward(None, halves.flatten(-2), grad)


def _softmax_pair_backward(x: Optional[torch.Tensor], features: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``dL/du`` from ``dL/dphi`` and ``phi = [softmax(u), softmax(-u)]`` (u itself is not needed)."""
    halves = features.view(*features.shape[:-1], 2, -1)
    # softmax's Jacobian-vector product y * (g - <g, y>) for each half; the second half saw -u
    through = torch._softmax_backward_data(grad.reshape(halves.shape), halves, -1, halves.dtype)
    return through[..., 0, :] - through[..., 1, :]


def softmax_pair(x: torch.Tensor) -> torch.Tensor:
    """``[softmax(u), softmax(-u)]`` over the feature axis (Hedgehog's map, Zhang et al., 2024): ``(..., N)`` -> ``(..., 2N)``.

    Exponential, so spiky: ``phi(q).phi(k)`` is large only where q and k peak
    on the same features. Each half sums to 1, so it cannot overflow. The
    backward pass keeps only the features (:class:`_SoftmaxPair`).
    """
    if torch.is_grad_enabled() and x.requires_grad:
        return _SoftmaxPair.apply(x)
    return _softmax_halves(x).flatten(-2)


def _elu_plus_one_backward(x: torch.Tensor, features: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``elu(u) + 1`` has slope 1 for u > 0 and ``exp(u) = phi`` below: the slope is ``min(phi, 1)``."""
    return grad * features.clamp(max=1.0)


def _relu_backward(x: torch.Tensor, features: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return grad * (features > 0).to(grad.dtype)


# ``(x, phi(x), dL/dphi) -> dL/dx`` for maps whose backward pass needs no graph; a backward pass that
# recomputes features (ops/state_attention.py) uses these instead of differentiating phi again.
FEATURE_MAP_BACKWARDS: Dict[FeatureMap, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    softmax_pair: _softmax_pair_backward, elu_plus_one: _elu_plus_one_backward, relu: _relu_backward,
}


FEATURE_MAPS: Dict[str, FeatureMap] = {
    "elu": elu_plus_one,
    "relu": relu,
    "dpfp1": partial(dpfp, nu=1),
    "dpfp2": partial(dpfp, nu=2),
    "taylor2": taylor2,
    "hedgehog": softmax_pair,  # after a learned projection (identity at initialisation)
    "t2r": relu,  # after a learned projection with bias (random at initialisation)
}

def _taylor2_kernel(scores: torch.Tensor) -> torch.Tensor:
    """``1 + s + s^2 / 2`` of dot products s: what ``taylor2(q) . taylor2(k)`` equals."""
    return 1.0 + scores + 0.5 * scores * scores


# Maps whose kernel phi(q).phi(k) is a function of q.k alone: the quadratic form of the
# bidirectional op computes it from the N-wide dot products instead of the F-wide features.
DOT_PRODUCT_KERNELS: Dict[FeatureMap, Callable[[torch.Tensor], torch.Tensor]] = {taylor2: _taylor2_kernel}

def has_formula_backward(feature_map: FeatureMap) -> bool:
    """Whether the ops' hand-written backward passes (the dense forms, the chunked causal op) apply to
    ``feature_map``: its derivative is a formula of its output (:data:`FEATURE_MAP_BACKWARDS`) and the weights
    are built from its features (not from q.k, as for the :data:`DOT_PRODUCT_KERNELS`)."""
    return feature_map in FEATURE_MAP_BACKWARDS and feature_map not in DOT_PRODUCT_KERNELS


# Learned maps: name -> whether the projection has a bias, and how it starts.
LEARNED_FEATURE_MAPS: Dict[str, Dict[str, object]] = {
    "hedgehog": {"bias": False, "init": "identity"},
    "t2r": {"bias": True, "init": "random"},
}

# Fixed maps that take a learned projection to a narrower width N first when a width is asked for
# (--adamra-feature-dim N > 0): taylor2's F grows as N^2 / 2, so N = D/4 makes its state 14x smaller
# for 64-wide heads. The projection starts as a random near-isometry (dot products kept on average).
NARROWABLE_FEATURE_MAPS: Dict[str, Dict[str, object]] = {
    "taylor2": {"bias": False, "init": "isometry"},
}


def accepts_feature_dim(name: str) -> bool:
    """Whether ``--adamra-feature-dim`` applies to the feature map ``name``."""
    return name in LEARNED_FEATURE_MAPS or name in NARROWABLE_FEATURE_MAPS


def projection_spec(name: str, feature_dim: int) -> Optional[Dict[str, object]]:
    """How the per-head projection before map ``name`` looks (bias, init), or None when it has none."""
    if name in LEARNED_FEATURE_MAPS:
        return LEARNED_FEATURE_MAPS[name]
    if feature_dim and name in NARROWABLE_FEATURE_MAPS:
        return NARROWABLE_FEATURE_MAPS[name]
    return None


@lru_cache(maxsize=None)
def output_width(feature_map: FeatureMap, input_width: int) -> int:
    """Width F of ``feature_map`` applied to vectors of width ``input_width`` (read off one application, once)."""
    return feature_map(torch.zeros(1, input_width)).size(-1)


def feature_width(name: str, input_width: int) -> int:
    """Width F of ``FEATURE_MAPS[name]`` applied to vectors of width ``input_width``."""
    return output_width(FEATURE_MAPS[name], input_width)


def pair_width(feature_map: FeatureMap, input_width: int) -> int:
    """Multiply-adds for one weight ``phi(q).phi(k)``: N for the :data:`DOT_PRODUCT_KERNELS`, else F."""
    return input_width if feature_map in DOT_PRODUCT_KERNELS else output_width(feature_map, input_width)
