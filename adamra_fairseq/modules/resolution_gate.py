"""Query-adaptive choice of resolution: a per-position gate over the R rates."""

from typing import Optional

import torch
from torch import nn


class ResolutionGate(nn.Module):
    """``g_t = softmax(W x_t + b)`` over R rates, turned into one scale per head.

    * ``soft``: head h is scaled by ``R * g_t[rate(h)]`` (1 at initialisation,
      where W = 0 and b = 0 make g uniform).
    * ``top1``: the arg-max rate's heads are scaled by their gate value, the
      others by 0. ``balance_loss`` then holds the Switch-style auxiliary loss
      ``R * sum_r f_r * P_r`` (f: fraction of positions routed to r, P: mean
      gate probability), which is minimal when all rates are used equally.

    The gate reads only the position's own input, so it never leaks the future.
    """

    def __init__(self, embed_dim: int, num_rates: int, heads_per_rate: int, routing: str = "soft"):
        super().__init__()
        self.num_rates = num_rates
        self.heads_per_rate = heads_per_rate
        self.routing = routing
        self.proj = nn.Linear(embed_dim, num_rates) if num_rates > 1 else None
        self.reset_parameters()
        self.balance_loss: Optional[torch.Tensor] = None

    def reset_parameters(self):
        """W = 0 and b = 0: the gate starts uniform over the rates."""
        if self.proj is not None:
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """``x`` ``(..., C)`` -> per-head scales ``(..., H)``, or None when there is one rate."""
        if self.proj is None:
            self.balance_loss = None
            return None
        gate = torch.softmax(self.proj(x).to(torch.promote_types(x.dtype, torch.float32)), dim=-1)
        if self.routing == "soft":
            scales = gate * self.num_rates
            self.balance_loss = None
        else:
            choice = gate.argmax(dim=-1, keepdim=True)
            routed = torch.zeros_like(gate).scatter_(-1, choice, 1.0)
            scales = routed * gate
            fraction = routed.reshape(-1, self.num_rates).mean(dim=0)
            probability = gate.reshape(-1, self.num_rates).mean(dim=0)
            self.balance_loss = self.num_rates * (fraction * probability).sum() if self.training else None
        if self.heads_per_rate > 1:
            scales = scales.repeat_interleave(self.heads_per_rate, dim=-1)
        return scales.to(x.dtype)


class _ScaledHeads(torch.autograd.Function):
    """``heads * scales`` keeping only the product and the scales for the backward pass."""

    @staticmethod
    def forward(ctx, heads: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        product = heads * scales
        ctx.save_for_backward(product, scales)
        return product

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        product, scales = ctx.saved_tensors
        # heads = product / scales where a scale is positive; where it is 0, so is the product, and the
        # scale's gradient is taken as 0 (see scale_heads)
        grad_scales = (grad * product).sum(dim=-1, keepdim=True) / torch.where(scales > 0, scales, 1.0)
        return grad * scales, grad_scales


def scale_heads(heads: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """``heads`` ``(..., H, D)`` times the gate's ``scales`` ``(..., H)``, by head.

    Autograd would keep ``heads`` to form the scales' gradient; this keeps the product instead, which the
    output projection that reads it keeps anyway (pass a contiguous ``heads``, so that the product is the
    tensor the projection sees). Exact wherever a scale is positive; a scale of exactly 0 (a rate that top-1
    routing did not choose, or a soft gate probability that underflowed) gets gradient 0 where plain
    multiplication would give ``sum(grad * heads)``, which the gate's own backward pass multiplies by 0.
    """
    if not (torch.is_grad_enabled() and (heads.requires_grad or scales.requires_grad)):
        return heads * scales.unsqueeze(-1)  # nothing to keep (generation, validation)
    return _ScaledHeads.apply(heads, scales.unsqueeze(-1))
