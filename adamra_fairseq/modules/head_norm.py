"""Output normalisation of each attention head (``--adamra-normaliser norm|both``)."""

import torch
from torch import Tensor, nn


class HeadNorm(nn.Module):
    """RMS norm of each head's output over its D channels, with a learned gain ``(H, D)`` (starts at 1).

    Used by ``--adamra-normaliser norm|both`` (TransNormer's idea: a norm on the
    output instead of, or besides, the kernel denominator). ``(B, H, T, D)`` in and out.
    """

    def __init__(self, num_heads: int, head_dim: int, eps: float = 1e-6):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(num_heads, head_dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        acc = torch.promote_types(x.dtype, torch.float32)
        y = x.to(acc)
        y = y * torch.rsqrt(y.square().mean(dim=-1, keepdim=True) + self.eps)
        return (y * self.gain.to(acc)[None, :, None, :]).to(x.dtype)
