"""Mean pooling of left-aligned sequences into blocks of ``rate`` tokens."""

from typing import Tuple, Union

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


def pooling_matrix(
    real: torch.Tensor, block_size: Union[int, torch.Tensor], num_blocks: int, dtype: torch.dtype
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Block means as a matrix, for rows with real tokens anywhere (no reordering).

    Args:
        real: ``(B, S)`` True at real tokens; blocks are counted from each row's first real token.
        block_size: tokens per block, one for all rows or ``(B,)`` one per row.
        num_blocks: M, the number of blocks kept.
    Returns:
        ``P`` ``(B, 1, M, S)`` with ``P @ x`` the block means of ``x`` (0 for empty blocks) and the
        ``(B, 1, 1, M)`` 1/0 weights of the blocks that hold a token, both in ``dtype``.
    """
    rank = real.long().cumsum(dim=1) - 1  # (B, S): each real token's index among its row's real tokens
    if isinstance(block_size, torch.Tensor):
        block_size = block_size[:, None]
    blocks = torch.arange(num_blocks, device=real.device)
    members = ((rank // block_size)[:, None, :] == blocks[None, :, None]) & real[:, None, :]  # (B, M, S)
    sizes = members.sum(dim=-1, keepdim=True).to(dtype)
    return (members.to(dtype) / sizes.clamp(min=1)).unsqueeze(1), (sizes > 0).transpose(1, 2).unsqueeze(1).to(dtype)
