"""Positive feature maps phi that replace softmax in kernel attention.

A feature map takes ``(..., D)`` to ``(..., F)``; :func:`feature_width` gives F
for a head width D (F = D for the elementwise maps, F = 2 * nu * D for DPFP).
"""

from functools import partial
from typing import Callable, Dict

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

    With ``r = relu([x, -x])`` (width 2D), the features are the products of r
    with itself rolled by 1 .. nu places: ``(..., D)`` -> ``(..., 2 * nu * D)``,
    non-negative, and sparser (so sharper attention) than elu + 1.
    """
    r = F.relu(torch.cat([x, -x], dim=-1))
    return torch.cat([r * r.roll(shift, dims=-1) for shift in range(1, nu + 1)], dim=-1)


FEATURE_MAPS: Dict[str, FeatureMap] = {
    "elu": elu_plus_one,
    "relu": relu,
    "dpfp1": partial(dpfp, nu=1),
    "dpfp2": partial(dpfp, nu=2),
}


def feature_width(name: str, head_dim: int) -> int:
    """Width F of ``FEATURE_MAPS[name]`` applied to vectors of width ``head_dim`` (read off one application)."""
    return FEATURE_MAPS[name](torch.zeros(1, head_dim)).size(-1)
