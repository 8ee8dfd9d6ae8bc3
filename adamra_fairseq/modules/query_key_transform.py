"""What happens to queries and keys per head before the kernel feature map's nonlinearity.

Two optional steps, both per position (so every attention path, parallel,
chunked, recurrent or cached, sees the same transformed q and k):

1. ``--adamra-qk-norm``:
   * ``none``: q and k as projected;
   * ``scale``: q multiplied by ``D^-1/2``, as softmax attention scales its logits;
   * ``l2``: q and k divided by their l2 norm and multiplied by ``sqrt(tau_h)``,
     a learned per-head temperature, so that ``q.k = tau_h cos(q, k)``;
     ``tau_h`` starts at ``sqrt(D)``, which gives ``q.k`` the spread of
     softmax attention's scaled logits at initialisation.
2. the learned projection of the learned feature maps (``hedgehog``, ``t2r``),
   and of ``taylor2`` when a width ``N`` is asked for:
   ``x -> x W_h (+ b_h)`` with ``W_h`` of shape ``(D, N)`` per head, shared by q
   and k. It is linear, so applying it before the keys are pooled equals
   applying it to the block means.

Without the l2 norm both steps are linear, so they fold into the input
projection (:meth:`QueryKeyTransform.fused_linear`): one ``C -> H*N`` matrix
product instead of the ``C -> H*D`` projection, a per-head product and the
copies that head-major layout needs. The module uses the folded form when a
call has at least as many tokens as input features (folding costs a
``C x H*D x N`` product of weights, which then pays for itself).
"""

import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ..ops.feature_maps import accepts_feature_dim, projection_spec

QK_NORMS = ("none", "scale", "l2")


class QueryKeyTransform(nn.Module):
    """Maps per-head queries/keys ``(B, H, T, D)`` to the feature map's input ``(B, H, T, N)``.

    Args:
        num_heads: H; head_dim: D.
        qk_norm: one of :data:`QK_NORMS`.
        feature_map: name of the feature map; learned maps get a projection, and so does
            ``taylor2`` with a ``feature_dim``.
        feature_dim: N for learned maps (0: N = D) and ``taylor2`` (0: no projection); must be 0
            for the others.
        init_scale: the projection starts as S times its usual start (identity or random).
    """

    def __init__(self, num_heads: int, head_dim: int, qk_norm: str = "none", feature_map: str = "elu",
                 feature_dim: int = 0, init_scale: float = 1.0):
        super().__init__()
        if qk_norm not in QK_NORMS:
            raise ValueError(f"unknown qk_norm {qk_norm!r}: choose one of {', '.join(QK_NORMS)}")
        self.qk_norm = qk_norm
        self.head_dim = head_dim
        self.log_temperature: Optional[nn.Parameter] = None
        if qk_norm == "l2":
            self.log_temperature = nn.Parameter(torch.full((num_heads,), 0.5 * math.log(head_dim)))
        if feature_dim and not accepts_feature_dim(feature_map):
            raise ValueError(f"feature_dim does not apply to the feature map {feature_map!r}")
        projection = projection_spec(feature_map, feature_dim)
        self.output_dim = (feature_dim or head_dim) if projection else head_dim
        self.weight: Optional[nn.Parameter] = None
        self.bias: Optional[nn.Parameter] = None
        if projection is not None:
            self.weight = nn.Parameter(torch.empty(num_heads, head_dim, self.output_dim))
            if projection["bias"]:
                self.bias = nn.Parameter(torch.zeros(num_heads, self.output_dim))
            self._init_projection(str(projection["init"]), init_scale)

    def _init_projection(self, init: str, scale: float) -> None:
        with torch.no_grad():
            if init == "identity" and self.output_dim == self.head_dim:
                self.weight.copy_(scale * torch.eye(self.head_dim).expand_as(self.weight))
            elif init == "isometry":  # E[W W^T] = S^2 I: (q W).(k W) equals S^2 q.k on average
                self.weight.normal_(std=scale * self.output_dim ** -0.5)
            else:  # x W keeps the scale of x, times S
                self.weight.normal_(std=scale * self.head_dim ** -0.5)

    def queries(self, q: Tensor) -> Tensor:
        """``(B, H, T, D)`` -> ``(B, H, T, N)``."""
        if self.qk_norm == "scale":
            q = q * self.head_dim ** -0.5
        return self._project(self._l2(q))

    def keys(self, k: Tensor) -> Tensor:
        """``(B, H, T, D)`` -> ``(B, H, T, N)``."""
        return self._project(self._l2(k))

    def fused_linear(self, linear: nn.Linear, is_query: bool) -> Optional[Tuple[Tensor, Tensor]]:
        """``(weight (H*N, C_in), bias (H*N,))`` of ``linear`` (``C_in -> H*D``) followed by :meth:`queries`
        (``is_query``) or :meth:`keys`, as one linear map; None when the transform is not linear (``l2``).
        Without a projection that is ``linear``'s own weight and bias (times ``D^-1/2`` for scaled queries)."""
        if self.log_temperature is not None:
            return None
        if self.weight is None:
            if is_query and self.qk_norm == "scale":
                return linear.weight * self.head_dim ** -0.5, linear.bias * self.head_dim ** -0.5
            return linear.weight, linear.bias
        heads, head_dim, width = self.weight.shape
        projection = self.weight
        if is_query and self.qk_norm == "scale":
            projection = projection * head_dim ** -0.5
        weight = torch.einsum("hdc,hdn->hnc", linear.weight.view(heads, head_dim, -1), projection)
        bias = torch.einsum("hd,hdn->hn", linear.bias.view(heads, head_dim), projection)
        if self.bias is not None:
            bias = bias + self.bias
        return weight.reshape(heads * width, -1), bias.reshape(heads * width)

    def temperature(self) -> Optional[Tensor]:
        """``(H,)`` tau_h of the ``l2`` norm, else None."""
        return None if self.log_temperature is None else self.log_temperature.exp()

    def _l2(self, x: Tensor) -> Tensor:
        if self.log_temperature is None:
            return x
        scale = (0.5 * self.log_temperature).exp().to(x.dtype)[None, :, None, None]
        return nn.functional.normalize(x, dim=-1, eps=1e-6) * scale

    def _project(self, x: Tensor) -> Tensor:
        if self.weight is None:
            return x
        out = torch.einsum("bhtd,hdn->bhtn", x, self.weight.to(x.dtype))
        return out if self.bias is None else out + self.bias.to(x.dtype)[None, :, None, :]

