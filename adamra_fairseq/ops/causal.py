"""Causal AdaMRA attention (decoder self-attention), chunked and linear in length.

For one group of heads sharing a rate r, a query at position t in block
b = t // r attends to

* every complete block j < b as one slot (block means kbar_j, vbar_j), and
* its own block as one slot: the running means ktilde_t, vtilde_t of
  positions b*r .. t.

    o_t = (phi(q_t)^T S_{<b} + a_t vtilde_t) / (phi(q_t)^T z_{<b} + a_t + eps),
    a_t = phi(q_t)^T phi(ktilde_t)

The own-block slot is elementwise, O(n*D). The complete blocks are causal
linear attention at block granularity, computed in chunks of C positions
(C a multiple of r): earlier chunks through a carried state (an exclusive
prefix sum over chunk summaries, (n/C)*D*Dv per head), blocks of the same
chunk through a small masked dense product. No n x D x Dv tensor is built.

Rows must be left-aligned: pads, if any, after the real tokens (a causal
query never sees later positions, so trailing pads need no masking).

Optional decay (``block_decay`` g per head, 0 < g <= 1): a complete block j
seen from a query in block b weighs ``g^(b - j)``; the own-block slot weighs
1. Chunks then carry their state with the factor ``g^(blocks per chunk)``
per chunk, through a lower-triangular matrix of powers of g (no division by
powers of g, so nothing overflows).
"""

import math
from typing import Optional


import torch
import torch.nn.functional as F

from .bidirectional import accumulation_dtype, normalise, with_ones
from .feature_maps import DOT_PRODUCT_KERNELS, FeatureMap, elu_plus_one
from .pooling import block_count


def running_block_means(x: torch.Tensor, rate: int) -> torch.Tensor:
    """``(B, h, T, D)`` -> mean of x over positions ``(t // r) * r .. t`` for every t (T a multiple of r);
    x itself for r = 1 (a cumulative sum over blocks of one token would be a pass over memory for nothing)."""
    if rate == 1:
        return x
    batch, heads, seq_len, dim = x.shape
    blocks = x.view(batch, heads, seq_len // rate, rate, dim)
    counts = torch.arange(1, rate + 1, device=x.device, dtype=x.dtype)
    return (blocks.cumsum(dim=3) / counts[:, None]).view(batch, heads, seq_len, dim)


def chunk_length(seq_len: int, rate: int, chunk_size: int) -> int:
    """The chunk the op uses for ``seq_len`` tokens: at least ``chunk_size`` and about ``2 sqrt(T)`` (a multiple
    of ``rate``), at most the whole sequence's blocks.

    The chunks' own products cost about ``T C F / r``, the carried state ``(T / C) F Dv`` and, with a decay,
    ``(T / C)^2 F Dv`` (a matrix of decay powers between chunks), so a fixed C grows quadratic in T. On a
    2-core CPU (8 heads of 64, Hedgehog features, forward + backward) C = 64 took 1.13 s at 16384 tokens with
    a decay, C = 256 0.61 s; at 4096 tokens C = 128 beat 64 by 10%, without a decay too (docs/benchmarks.md).
    """
    grown = max(chunk_size, -(-2 * math.isqrt(seq_len) // rate) * rate)
    return min(grown, block_count(seq_len, rate) * rate)


def causal_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rate: int,
    chunk_size: int = 64,
    feature_map: FeatureMap = elu_plus_one,
    eps: float = 1e-6,
    divide: bool = True,
    block_decay: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Causal AdaMRA attention of one rate group.

    Args:
        q, k: ``(B, h, T, D)``; v: ``(B, h, T, Dv)``, left-aligned rows.
        rate: block size r; chunk_size: C, a positive multiple of r: the shortest chunk (:func:`chunk_length`).
        divide: divide by the kernel normaliser (else return the numerator).
        block_decay: ``(h,)`` decay g per complete block of distance, or None (no decay).
    Returns:
        ``(B, h, T, Dv)`` in q's dtype.
    """
    if chunk_size % rate:
        raise ValueError(f"chunk size {chunk_size} is not a multiple of rate {rate}")
    batch, heads, seq_len, _ = q.shape
    input_dtype = q.dtype
    acc = accumulation_dtype(input_dtype)
    # Long sequences take longer chunks; one shorter than a chunk is not padded to a full one (same result).
    chunk_size = chunk_length(seq_len, rate, chunk_size)
    num_chunks = block_count(seq_len, chunk_size)
    padded_len = num_chunks * chunk_size
    q, k, v = (x.to(acc) for x in (q, k, v))
    if padded_len != seq_len:
        q, k, v = (F.pad(x, (0, 0, 0, padded_len - seq_len)) for x in (q, k, v))

    k_running = running_block_means(k, rate)
    v_running = with_ones(running_block_means(v, rate))  # [mean v, 1]: numerator and normaliser together
    # Complete blocks: the running mean at a block's last position is its full mean.
    blocks_per_chunk = chunk_size // rate
    shape = (batch, heads, num_chunks, blocks_per_chunk)
    k_block = k_running[:, :, rate - 1 :: rate].reshape(*shape, k.size(-1))
    v_block = v_running[:, :, rate - 1 :: rate].reshape(*shape, v_running.size(-1))
    q_chunks = q.view(batch, heads, num_chunks, chunk_size, q.size(-1))
    kernel = DOT_PRODUCT_KERNELS.get(feature_map)
    if kernel is not None:  # weights from N-wide dot products; the features only for a carried state
        own_weight = kernel((q * k_running).sum(dim=-1, keepdim=True))
        scores = kernel(q_chunks @ k_block.transpose(3, 4))
        phi_q_chunks = phi_k_block = None
        if num_chunks > 1:
            phi_q_chunks, phi_k_block = feature_map(q_chunks), feature_map(k_block)
    else:
        phi_q = feature_map(q)
        phi_k_running = feature_map(k_running)
        own_weight = (phi_q * phi_k_running).sum(dim=-1, keepdim=True)
        phi_k_block = phi_k_running[:, :, rate - 1 :: rate].reshape(*shape, phi_k_running.size(-1))
        phi_q_chunks = phi_q.view(batch, heads, num_chunks, chunk_size, phi_q.size(-1))
        scores = phi_q_chunks @ phi_k_block.transpose(3, 4)
    # Own (partial) block: one slot per query, elementwise (weight a_t, shape (B, h, Tp, 1)).
    read = own_weight * v_running

    query_block = torch.arange(chunk_size, device=q.device) // rate  # block of each position, within its chunk
    key_block = torch.arange(blocks_per_chunk, device=q.device)
    earlier = (key_block[None, :] < query_block[:, None]).to(acc)  # (C, C/r)
    inter = None  # earlier chunks' contribution; a sequence of one chunk has none
    if block_decay is None:
        intra_weights = earlier
        if num_chunks > 1:  # exclusive prefix sum of per-chunk summaries [S | z]
            chunk_summary = phi_k_block.transpose(3, 4) @ v_block  # (B, h, N, F, Dv + 1)
            carried = F.pad(chunk_summary[:, :, :-1].cumsum(dim=2), (0, 0, 0, 0, 1, 0))
            inter = phi_q_chunks @ carried
    else:
        decay = block_decay.to(acc)[:, None, None]  # (h, 1, 1)
        distance = (query_block[:, None] - key_block[None, :]).to(acc).clamp(min=0)
        intra_weights = (earlier * decay ** distance)[None, :, None]  # (1, h, 1, C, C/r)
        if num_chunks > 1:
            # A chunk's summary as seen from the next chunk's first block: block i weighs g^(P - i).
            to_chunk_end = (blocks_per_chunk - key_block).to(acc)
            weighted_keys = phi_k_block * (decay[..., 0] ** to_chunk_end)[None, :, None, :, None]
            chunk_summary = weighted_keys.transpose(3, 4) @ v_block
            # Chunk c carries chunk c' < c with weight g^(P (c - 1 - c')).
            chunk = torch.arange(num_chunks, device=q.device)
            gap = (chunk[:, None] - 1 - chunk[None, :]).to(acc)
            carry = torch.where(gap >= 0, decay ** (blocks_per_chunk * gap.clamp(min=0)), torch.zeros_like(gap))
            carried = torch.einsum("hcd,bhdfv->bhcfv", carry, chunk_summary)
            inter = (phi_q_chunks @ carried) * (decay[..., 0] ** query_block.to(acc))[None, :, None, :, None]

    # Same chunk: blocks strictly before the query's own block (scores: (B, h, N, C, C/r)).
    intra = (scores * intra_weights) @ v_block
    earlier_blocks = intra if inter is None else inter + intra

    out = normalise(read + earlier_blocks.view_as(read), eps, divide)
    return out[:, :, :seq_len].to(input_dtype)
