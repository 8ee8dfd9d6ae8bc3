"""Cross-attention through a fixed-size memory of the source, read with a softmax.

Two ways to build the ``L`` memory rows per head (both linear in the lengths,
both a decoding state fixed by ``L``):

* learned rows (``--adamra-cross-memory L``), below;
* position blocks (``--adamra-cross-blocks L``, :func:`source_blocks`): the
  source is cut into at most ``L`` blocks of ``max(r, ceil(M / L))``
  consecutive real tokens and each block is replaced by its mean key and
  value, as AdaMRA pools with rate ``r``; the rate adapts to the source's
  length, so a source of at most ``L`` tokens keeps one row per token (then
  the read is exactly softmax attention) and a longer one is read at a
  coarser resolution.

Learned rows:

Each head owns ``L`` learned memory queries ``u_1 .. u_L``. The (block-pooled)
source keys and values are compressed into ``L`` memory rows by a softmax over
source positions,

    a_{l,j} = softmax_j(u_l . kbar_j / sqrt(N)),
    K_l = sum_j a_{l,j} kbar_j,     V_l = sum_j a_{l,j} vbar_j,

and every target query reads the memory with softmax attention,
``o_t = softmax_l(q_t . K_l) V`` (scale ``q`` with ``--adamra-cross-qk-norm scale``
for fairseq's ``D^-1/2``). Compression costs ``M L N`` and each query ``L (N + D)``
multiply-adds per head, both linear in the lengths, and decoding keeps ``K``
and ``V`` (``L`` rows per head) for the whole output: a state fixed by ``L``.
The idea is that of bounded-memory attention (Peng et al. 2022, "ABC:
Attention with Bounded-memory Control"; Ma et al. 2021, "Luna"): the read is
a softmax, which can single out one memory row, where a kernel's weights are
a low-order polynomial or a fixed feature product of the dot product.
"""

from typing import Optional, Tuple

import torch

from .bidirectional import accumulation_dtype
from .pooling import pooling_matrix


def compress_source(
    k: torch.Tensor, v: torch.Tensor, memory_queries: torch.Tensor, filled: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Source keys/values compressed into ``L`` memory rows per head.

    Args:
        k: ``(B, h, M, N)`` (block-mean) keys; v: ``(B, h, M, Dv)`` values.
        memory_queries: ``(h, L, N)`` learned queries per head.
        filled: ``(B, 1, 1, M)`` 1/0 weights of the blocks that hold a token, or None (all do).
    Returns:
        memory keys ``(B, h, L, N)`` and values ``(B, h, L, Dv)``.
    """
    scores = torch.matmul(memory_queries.to(k.dtype), k.transpose(-1, -2)) * k.size(-1) ** -0.5
    if filled is not None:
        scores = scores.masked_fill(filled == 0, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ k, weights @ v


def source_blocks(
    k: torch.Tensor, v: torch.Tensor, max_blocks: int, rate: int = 1, key_padding_mask: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row's real tokens pooled into at most ``max_blocks`` blocks of ``max(rate, ceil(length / max_blocks))``.

    Blocks are counted from each row's first real token, whatever the padding layout (pads anywhere).

    Args:
        k: ``(B, h, S, N)``; v: ``(B, h, S, Dv)``; key_padding_mask: ``(B, S)``, True = pad, or None.
    Returns:
        block-mean keys ``(B, h, L, N)`` and values ``(B, h, L, Dv)`` in the accumulation dtype, and
        ``(B, 1, 1, L)`` 1/0 weights of the blocks that hold a token, with ``L = min(max_blocks, S)``.
    """
    batch, _, seq_len, _ = k.shape
    acc = accumulation_dtype(k.dtype)
    num_blocks = min(max_blocks, seq_len)
    real = (torch.ones(batch, seq_len, dtype=torch.bool, device=k.device) if key_padding_mask is None
            else ~key_padding_mask)
    lengths = real.sum(dim=1)
    size = torch.clamp(-(-lengths // max_blocks), min=rate)  # (B,) tokens per block of each row
    if rate == 1 and num_blocks == seq_len and bool((size == 1).all()):  # one block per token: no pooling
        return k.to(acc), v.to(acc), real[:, None, None, :].to(acc)
    pool, filled = pooling_matrix(real, size, num_blocks, acc)  # (B, 1, L, S), (B, 1, 1, L)
    return pool @ k.to(acc), pool @ v.to(acc), filled


def read_memory(
    q: torch.Tensor, memory_keys: torch.Tensor, memory_values: torch.Tensor, filled: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Softmax read of the memory: queries ``(B, h, T, N)``, memory ``(B, h, L, N)`` and ``(B, h, L, Dv)``,
    ``filled`` (broadcast to ``(B, h, 1, L)``, 1/0; None: every row is real) -> ``(B, h, T, Dv)`` in q's dtype."""
    scores = torch.matmul(q.to(memory_keys.dtype), memory_keys.transpose(-1, -2))
    if filled is not None:
        scores = scores.masked_fill(filled == 0, float("-inf"))
    return (torch.softmax(scores, dim=-1) @ memory_values).to(q.dtype)
