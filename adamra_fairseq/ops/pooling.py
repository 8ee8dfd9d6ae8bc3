"""Mean pooling of left-aligned sequences into blocks of ``rate`` tokens."""

from typing import Tuple

import torch


def block_count(seq_len: int, rate: int) -> int:
    """Number of blocks ``ceil(seq_len / rate)`` (the last one may be short)."""
    return -(-seq_len // rate)


def block_sizes(lengths: torch.Tensor, rate: int, num_blocks: int) -> torch.Tensor:
    """``(B, M)`` number of real tokens in each block; 0 for blocks past a row's end."""
    starts = torch.arange(num_blocks, device=lengths.device) * rate
    return (lengths[:, None] - starts[None, :]).clamp(min=0, max=rate)


def block_means(
    x: torch.Tensor, lengths: torch.Tensor, rate: int, has_pads: bool = True
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Means of ``x`` over consecutive blocks of ``rate`` real tokens.

    Args:
        x: ``(B, h, T, D)`` left-aligned values (positions ``>= lengths`` are pads).
        lengths: ``(B,)`` real tokens per row.
        rate: block size ``r >= 1``.
        has_pads: False promises every row is full (``lengths == T``), which skips masking.
    Returns:
        means ``(B, h, M, D)`` with ``M = ceil(T / r)`` (0 for empty blocks) and
        sizes ``(B, M)``, the number of real tokens in each block.
    """
    batch, heads, seq_len, dim = x.shape
    num_blocks = block_count(seq_len, rate)
    sizes = block_sizes(lengths, rate, num_blocks)
    if has_pads:
        real = torch.arange(seq_len, device=x.device)[None, :] < lengths[:, None]
        x = x.masked_fill(~real[:, None, :, None], 0.0)
    if rate == 1:
        return x, sizes
    padded_len = num_blocks * rate
    if padded_len != seq_len:
        x = torch.nn.functional.pad(x, (0, 0, 0, padded_len - seq_len))
    sums = x.reshape(batch, heads, num_blocks, rate, dim).sum(dim=3)
    return sums / sizes.clamp(min=1)[:, None, :, None].to(x.dtype), sizes
