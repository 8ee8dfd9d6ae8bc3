"""Positive feature maps phi that replace softmax in kernel attention."""

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


FEATURE_MAPS: Dict[str, FeatureMap] = {"elu": elu_plus_one, "relu": relu}
