"""The bidirectional state form with a backward pass that keeps less and recomputes the features.

For one group of heads (queries q, pooled keys kbar, pooled values vbar):

    S = phi(kbar)^T vbar,  z = phi(kbar)^T 1,  n = phi(q) S,  d = phi(q) z + eps,  o = n / d

Autograd would keep every intermediate for the backward pass: phi(q) and
phi(kbar) (F = 2N wide for Hedgehog features), the values with their column
of ones, the numerator. :class:`StateAttention` keeps only its inputs, the
``(F, Dv)`` summary S, z, the denominator d and the output o (inputs that are
views into a larger tensor, such as one group's slice of the stacked q/k/v
projection, as compact copies, so that the larger tensor can be freed), and recomputes
phi(q) and phi(kbar) in the backward pass (an elementwise map, far cheaper
than the products). With ``g = dL/do``:

    dL/dn = g / d,   dL/dd = -sum(g * o) / d   (per query)
    dL/dphi(q) = dL/dn S^T + dL/dd z^T
    dL/dS = phi(q)^T dL/dn,   dL/dz = phi(q)^T dL/dd
    dL/dphi(kbar) = vbar dL/dS^T + 1 dL/dz^T,   dL/dvbar = phi(kbar) dL/dS

and the features' own backward pass (a formula for softmax_pair, elu + 1 and
relu; a recomputed graph for the others) gives dL/dq and dL/dkbar. Without the denominator (``divide=False``) o = n and d is not
formed. Everything runs in the dtype of the inputs (the caller promotes them).
"""

from typing import Optional

import torch

from .feature_maps import FEATURE_MAP_BACKWARDS, FeatureMap


def without_empty_blocks(x: torch.Tensor, filled: Optional[torch.Tensor]) -> torch.Tensor:
    """``x`` ``(B, h, M, .)`` with the rows of blocks that hold no token zeroed (``filled``: the ``(B, 1, 1, M)``
    1/0 weights of :func:`.bidirectional.pooled_means`, or None: every block holds a token)."""
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


def compact(x: torch.Tensor) -> torch.Tensor:
    """``x``, or a copy of it when it is a view into a larger storage (e.g. one head group's slice of the
    stacked q/k/v projection): what a backward pass keeps should not keep the whole storage alive."""
    if x.untyped_storage().nbytes() > x.numel() * x.element_size():
        return x.clone(memory_format=torch.contiguous_format)
    return x


class StateAttention(torch.autograd.Function):
    """``phi(q) S / (phi(q) z + eps)`` from q ``(B, h, T, N)``, kbar ``(B, h, M, N)``, vbar ``(B, h, M, Dv)``."""

    @staticmethod
    def forward(ctx, q, k_mean, v_mean, filled, feature_map, eps, divide):
        phi_k = block_features(feature_map, k_mean, filled)
        summary = phi_k.transpose(2, 3) @ v_mean  # (B, h, F, Dv)
        phi_q = feature_map(q)
        out = phi_q @ summary
        normaliser = sums = None
        if divide:
            sums = phi_k.sum(dim=2)  # z: (B, h, F)
            normaliser = (phi_q @ sums.unsqueeze(-1)) + eps  # d: (B, h, T, 1)
            out = out / normaliser
        ctx.feature_map, ctx.divide = feature_map, divide
        ctx.save_for_backward(compact(q), compact(k_mean), compact(v_mean), filled, summary, sums, normaliser,
                              out if divide else None)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k_mean, v_mean, filled, summary, sums, normaliser, out = ctx.saved_tensors
        # The query side first, so that its (T, F) tensors are freed before the key side's are formed.
        phi_q, through_q = _features_with_backward(ctx.feature_map, q, None)
        grad_numerator = grad_out
        grad_sums = None
        if ctx.divide:
            grad_numerator = grad_out / normaliser
            grad_normaliser = -(grad_numerator * out).sum(dim=-1, keepdim=True)  # (B, h, T, 1)
            grad_sums = grad_normaliser.transpose(2, 3) @ phi_q  # (B, h, 1, F)
        grad_summary = phi_q.transpose(2, 3) @ grad_numerator  # (B, h, F, Dv)
        grad_phi_q = grad_numerator @ summary.transpose(2, 3)
        if ctx.divide:
            grad_phi_q = grad_phi_q + grad_normaliser * sums.unsqueeze(2)
        grad_q = through_q(grad_phi_q)
        del phi_q, through_q, grad_phi_q, grad_numerator
        phi_k, through_k = _features_with_backward(ctx.feature_map, k_mean, filled)
        grad_v_mean = phi_k @ grad_summary
        grad_phi_k = v_mean @ grad_summary.transpose(2, 3)
        if grad_sums is not None:
            grad_phi_k = grad_phi_k + grad_sums
        grad_k_mean = through_k(grad_phi_k)
        return grad_q, grad_k_mean, grad_v_mean, None, None, None, None


def state_attention(
    q: torch.Tensor,
    k_mean: torch.Tensor,
    v_mean: torch.Tensor,
    filled: Optional[torch.Tensor],
    feature_map: FeatureMap,
    eps: float = 1e-6,
    divide: bool = True,
) -> torch.Tensor:
    """The state form ``phi(q) (phi(kbar)^T [vbar | 1])``, normalised if ``divide``: ``(B, h, T, Dv)`` in q's dtype.

    q ``(B, h, T, N)``; ``k_mean`` ``(B, h, M, N)``, ``v_mean`` ``(B, h, M, Dv)`` and ``filled``
    (``(B, 1, 1, M)`` or None) as :func:`.bidirectional.pooled_keys_values` gives them, without the
    column of ones. Same numbers as autograd through the plain products; the backward pass keeps
    less (:class:`StateAttention`).
    """
    acc = k_mean.dtype
    return StateAttention.apply(q.to(acc), k_mean, v_mean, filled, feature_map, eps, divide).to(q.dtype)

