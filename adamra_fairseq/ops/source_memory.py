"""Cross-attention through a fixed-size memory of the source (``--adamra-cross-memory L``).

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


def read_memory(q: torch.Tensor, memory_keys: torch.Tensor, memory_values: torch.Tensor) -> torch.Tensor:
    """Softmax read of the memory: queries ``(B, h, T, N)``, memory ``(B, h, L, N)`` and ``(B, h, L, Dv)``
    -> ``(B, h, T, Dv)`` in the queries' dtype."""
    weights = torch.softmax(torch.matmul(q.to(memory_keys.dtype), memory_keys.transpose(-1, -2)), dim=-1)
    return (weights @ memory_values).to(q.dtype)
