"""Moving the real (non-pad) tokens of each row to the front, and back.

Blocks are aligned to the first real token, so every op works on
left-aligned rows: real tokens at positions ``0 .. length-1``, pads after.
"""

from typing import Optional, Tuple

import torch


def real_lengths(key_padding_mask: Optional[torch.Tensor], batch: int, seq_len: int, device) -> torch.Tensor:
    """``(B,)`` number of real tokens per row; ``key_padding_mask`` is ``(B, T)``, True = pad."""
    if key_padding_mask is None:
        return torch.full((batch,), seq_len, dtype=torch.long, device=device)
    return (~key_padding_mask).sum(dim=1)


def has_padding(key_padding_mask: Optional[torch.Tensor]) -> bool:
    return key_padding_mask is not None and bool(key_padding_mask.any())


def is_left_aligned(key_padding_mask: torch.Tensor) -> bool:
    """True if every row's pads ``(B, T)`` (True = pad) come after all its real tokens."""
    return not bool((key_padding_mask[:, :-1] & ~key_padding_mask[:, 1:]).any())


def left_align_order(key_padding_mask: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` gather indices that put real tokens first, in their original order."""
    # Stable sort of the pad flags: real tokens (False) keep their relative order.
    return torch.sort(key_padding_mask.to(torch.int8), dim=1, stable=True).indices


def gather_time(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Reorders ``x`` ``(B, h, T, D)`` along time with ``order`` ``(B, T)``."""
    index = order[:, None, :, None].expand(-1, x.size(1), -1, x.size(3))
    return x.gather(2, index)


def scatter_time(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`gather_time`: puts row position ``i`` back at ``order[i]``."""
    index = order[:, None, :, None].expand(-1, x.size(1), -1, x.size(3))
    return torch.empty_like(x).scatter_(2, index, x)


def left_aligned_keys_values(
    k: torch.Tensor, v: torch.Tensor, key_padding_mask: Optional[torch.Tensor]
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """Keys/values ``(B, h, S, .)`` with each row's real tokens moved to the front, the ``(B,)`` real
    lengths, and whether any row has pads (False: ``k`` and ``v`` are returned as they are)."""
    batch, _, seq_len, _ = k.shape
    padded = has_padding(key_padding_mask)
    lengths = real_lengths(key_padding_mask if padded else None, batch, seq_len, k.device)
    if padded:
        order = left_align_order(key_padding_mask)
        k, v = gather_time(k, order), gather_time(v, order)
    return k, v, lengths, padded
