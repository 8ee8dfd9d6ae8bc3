"""``MultiResolutionAttention``: AdaMRA as a drop-in for fairseq's ``MultiheadAttention``.

Which computation runs follows what fairseq passes in:

* no ``attn_mask``, no incremental state: bidirectional (encoder self-attention,
  cross-attention during training);
* the decoder's triangular future mask, or the empty :func:`causal_marker`
  that ``AdaMRADecoder`` passes instead of building a T x T mask: the chunked
  causal op;
* in both, inputs of at most ``ops.dense.DENSE_MAX_LENGTH`` tokens (every MT
  sentence) take the dense all-heads form of ``ops/dense.py`` instead (same
  numbers, fewer and larger operations; for causal attention only while the
  batch is small enough, ``causal_dense_is_cheaper``), longer ones the linear
  ops: bidirectional attention the state form of all heads at once
  (``ops/state_attention.py``), causal attention the chunked op per rate group;
* ``incremental_state`` in self-attention: one recurrent step per position;
* ``incremental_state`` with ``static_kv`` (cross-attention): at the first
  step each rate group caches what the cheaper read needs (per-head summaries
  ``[S | z]``, or for short sources the pooled keys and values), and every
  later step reuses it. As for fairseq's ``MultiheadAttention``, a reorder
  that keeps the batch size leaves this cache alone: beam search reorders
  only among the hypotheses of one sentence, which share the source.
  With ``--adamra-cross-memory L`` (learned rows) or ``--adamra-cross-blocks L``
  (at most L position blocks) cross-attention instead reads L memory rows
  per head with a softmax (``ops/source_memory.py``); decoding caches the rows.

In every path, queries and keys first go through the same per-position
:class:`QueryKeyTransform` (``--adamra-qk-norm``, the learned feature maps'
projection), and each head's output through the optional :class:`HeadNorm`
(``--adamra-normaliser norm|both``) before the gate.

There is no attention-weight dropout (no weights exist; ``--attention-dropout``
is ignored by AdaMRA layers). Attention weights are never materialised: ``forward`` returns ``None`` for
them (fairseq's ``--print-alignment`` needs softmax cross-attention).
"""

from typing import Dict, Optional, Tuple

import torch
from fairseq.incremental_decoding_utils import with_incremental_state
from torch import Tensor, nn

from ..ops.bidirectional import (
    attend_blocks, attend_state, bidirectional_attention, block_features, cached_blocks_are_cheaper, pooled_keys_values,
    state_form_for_all_heads,
)
from ..ops.causal import causal_attention, causal_heads
from ..ops.dense import (
    bidirectional_dense, causal_dense, causal_dense_is_cheaper, dense_is_cheaper,
)
from ..ops.feature_maps import FEATURE_MAPS, feature_width, pair_width
from ..ops.heads import head_view, time_major_heads
from ..ops.padding import gather_time, has_padding, is_left_aligned, left_align_order, scatter_time
from ..ops.recompute import recomputed
from ..ops.recurrent import causal_step, initial_state, reorder_state
from ..ops.state_attention import bidirectional_state
from ..ops.source_memory import compress_source, read_memory, source_blocks
from .head_norm import HeadNorm
from .options import AdaMRAOptions
from .query_key_transform import QueryKeyTransform
from .resolution_gate import ResolutionGate, scale_heads

def causal_marker(device=None) -> Tensor:
    """An empty ``attn_mask`` that means "causal": AdaMRA decoders pass it instead of a T x T mask."""
    return torch.empty(0, device=device)


def is_causal_marker(mask: Tensor) -> bool:
    return mask.numel() == 0


def is_future_mask(mask: Tensor, length: int) -> bool:
    """True if ``mask`` is ``(T, T)`` with -inf strictly above the diagonal and 0 elsewhere."""
    if mask.dim() != 2 or mask.shape != (length, length):
        return False
    above = torch.ones(length, length, dtype=torch.bool, device=mask.device).triu(1)
    blocked = torch.isinf(mask) & (mask < 0)
    return bool(torch.equal(blocked, above)) and bool((mask[~above] == 0).all())


def initial_decay_logits(num_heads: int) -> Tensor:
    """Logits of the starting per-token decays ``1 - 2^-(1 + 6h/(H-1))``: from 0.5 (a head that sees mostly
    the last token or two) to 0.992 (a half-life of about 90 tokens), spread over the heads."""
    exponents = 1 + 6 * torch.arange(num_heads, dtype=torch.float32) / max(num_heads - 1, 1)
    per_token = 1 - 2.0 ** -exponents
    return torch.log(per_token / (1 - per_token))


def _causal_group(q: Tensor, k: Tensor, v: Tensor, block_decay: Optional[Tensor], **options) -> Tensor:
    """:func:`causal_attention` with the tensors first (what :func:`recomputed` passes)."""
    return causal_attention(q, k, v, block_decay=block_decay, **options)


@with_incremental_state
class MultiResolutionAttention(nn.Module):
    """Multi-resolution, query-adaptive kernel attention.

    Args:
        embed_dim: model width C; num_heads: H (the number of rates divides H).
        options: validated AdaMRA options (rates, routing, feature map, ...); for
            cross-attention, pass ``options.for_cross_attention()``.
        kdim, vdim: widths of key/value inputs (cross-attention), default C.
        self_attention / encoder_decoder_attention: as in fairseq.
        causal_decay: decoder self-attention only: a learned decay per head weighs
            a complete block j seen from block b by ``gamma_h^(rate (b - j))``.
    Inputs are time-major: query ``(T, B, C)``, key/value ``(S, B, C)``.
    """

    # Long self-attention inputs (the state form, the chunked causal op) write the gradient of the stacked q/k/v
    # projection over the projection itself, which nothing reads after the op: at 16384 tokens of 8 heads that
    # is 100 MB less alive in the backward pass. Its price: one backward pass per forward (no retain_graph=True).
    # Set to False (on the class or one module) to give each its own buffer.
    reuse_projection_memory = True

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        options: AdaMRAOptions,
        kdim: Optional[int] = None,
        vdim: Optional[int] = None,
        self_attention: bool = False,
        encoder_decoder_attention: bool = False,
        causal_decay: bool = False,
    ):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if num_heads % len(options.rates):
            raise ValueError(f"{len(options.rates)} rates do not divide {num_heads} heads")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.kdim = kdim or embed_dim
        self.vdim = vdim or embed_dim
        self.self_attention = self_attention
        self.encoder_decoder_attention = encoder_decoder_attention
        self.options = options
        self.rates = options.rates
        self.heads_per_rate = num_heads // len(options.rates)
        # With a source memory or blocks (cross-attention), the read is a softmax: no feature map, no projection.
        self.memory_queries: Optional[nn.Parameter] = None
        self.softmax_read = bool(options.memory or options.blocks)
        self.query_key = QueryKeyTransform(
            num_heads, self.head_dim, options.qk_norm,
            "elu" if self.softmax_read else options.feature_map, 0 if self.softmax_read else options.feature_dim,
            options.feature_init_scale,
        )
        if options.memory:
            self.memory_queries = nn.Parameter(torch.randn(num_heads, options.memory, self.query_key.output_dim))
        self.feature_map = FEATURE_MAPS[options.feature_map]
        self.feature_dim = feature_width(options.feature_map, self.query_key.output_dim)
        self.pair_width = pair_width(self.feature_map, self.query_key.output_dim)
        self.eps = options.eps
        self.divide = options.divides_by_normaliser
        self.head_norm = HeadNorm(num_heads, self.head_dim) if options.normalises_output else None
        self.decay_logit: Optional[nn.Parameter] = None
        if causal_decay:
            self.decay_logit = nn.Parameter(initial_decay_logits(num_heads))
        self.rate_of_head = options.head_rates(num_heads)
        self.register_buffer("head_rates", torch.tensor(self.rate_of_head, dtype=torch.long), persistent=False)
        self.k_proj = nn.Linear(self.kdim, embed_dim)
        self.v_proj = nn.Linear(self.vdim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.gate = ResolutionGate(embed_dim, len(options.rates), self.heads_per_rate, options.routing)
        self._verified_mask: Optional[Tuple[int, Tuple[int, ...]]] = None
        self._decay_cache: Optional[Tuple[Tuple[int, int], Tensor]] = None
        self._folded_cache: Optional[Tuple[Tuple[Tuple[int, int], ...], Tuple[Tensor, Tensor]]] = None
        self.reset_parameters()

    def reset_parameters(self):
        """fairseq's MultiheadAttention initialisation."""
        gain = 1 / 2 ** 0.5 if self.kdim == self.embed_dim and self.vdim == self.embed_dim else 1.0
        for proj in (self.k_proj, self.v_proj, self.q_proj):
            nn.init.xavier_uniform_(proj.weight, gain=gain)
        nn.init.xavier_uniform_(self.out_proj.weight)
        for proj in (self.k_proj, self.v_proj, self.q_proj, self.out_proj):
            nn.init.constant_(proj.bias, 0.0)

    # ----- shapes ---------------------------------------------------------
    def _heads(self, x: Tensor) -> Tensor:
        """``(T, B, H*D)`` -> ``(B, H, T, D)`` (a view)."""
        return head_view(x, self.num_heads)

    def _transformed(self, x: Tensor, linear: nn.Linear, is_query: bool) -> Tensor:
        """``linear`` then the query/key transform: ``(T, B, C_in)`` -> ``(B, H, T, N)``, folded into one
        matrix product when the call has enough tokens for folding to pay (:class:`QueryKeyTransform`)."""
        fused = None
        if x.size(0) * x.size(1) >= linear.in_features:
            fused = self.query_key.fused_linear(linear, is_query)
        if fused is not None:
            return self._heads(nn.functional.linear(x, *fused))
        heads = self._heads(linear(x))
        return self.query_key.queries(heads) if is_query else self.query_key.keys(heads)

    def _groups(self, x: Tensor):
        """Splits ``(B, H, ...)`` into one ``(B, H/R, ...)`` tensor per rate."""
        return x.split(self.heads_per_rate, dim=1)

    # ----- forward --------------------------------------------------------
    def forward(
        self,
        query: Tensor,
        key: Optional[Tensor],
        value: Optional[Tensor],
        key_padding_mask: Optional[Tensor] = None,
        incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]] = None,
        need_weights: bool = True,
        static_kv: bool = False,
        attn_mask: Optional[Tensor] = None,
        before_softmax: bool = False,
        need_head_weights: bool = False,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """Returns ``(output (T, B, C), None)``."""
        if before_softmax:
            raise ValueError("MultiResolutionAttention has no softmax: before_softmax is not supported")
        tgt_len, batch, _ = query.shape
        if self.encoder_decoder_attention:
            q = self._transformed(query, self.q_proj, is_query=True)
            heads_out = self._cross(q, key, value, key_padding_mask, incremental_state, static_kv, attn_mask)
        else:
            q, k, v, packed = self._self_projections(query, key, value)
            if incremental_state is not None:
                heads_out = self._decode_steps(q, k, v, incremental_state)
            else:
                heads_out = self._parallel_self(q, k, v, key_padding_mask, attn_mask, packed)
        if self.head_norm is not None:
            heads_out = self.head_norm(heads_out)
        heads_out = heads_out.permute(2, 0, 1, 3).contiguous()  # (T, B, H, D)
        scales = self.gate(query)
        if scales is not None:
            heads_out = scale_heads(heads_out, scales)
        return self.out_proj(heads_out.view(tgt_len, batch, self.embed_dim)), None

    def _keys_values(self, key: Tensor, value: Tensor) -> Tuple[Tensor, Tensor]:
        """Transformed per-head keys ``(B, H, S, N)`` and values ``(B, H, S, D)``."""
        return self._transformed(key, self.k_proj, is_query=False), self._heads(self.v_proj(value))

    def _self_projections(self, query: Tensor, key: Tensor, value: Tensor
                          ) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
        """Self-attention's q, k ``(B, H, T, N)`` and v ``(B, H, T, D)``, and the ``(T, B, 2 H N + C)`` tensor
        they are views of, or None: one matrix product of the input by the three projections stacked (the q/k
        transforms folded in) when fairseq passes one tensor as query, key and value and
        :meth:`_folded_in_projection` has the stacked map; else one product each."""
        folded = self._folded_in_projection(query.size(0) * query.size(1)) if key is query and value is query else None
        if folded is None:
            return (self._transformed(query, self.q_proj, is_query=True), *self._keys_values(key, value), None)
        width = self.query_key.output_dim * self.num_heads
        packed = nn.functional.linear(query, *folded)
        return (*time_major_heads(packed, (width, width, self.embed_dim), self.num_heads), packed)

    def _folded_in_projection(self, tokens: int) -> Optional[Tuple[Tensor, Tensor]]:
        """``(weight (2 H N + C, C), bias)``: the q projection and query transform, the k projection and key
        transform, and the v projection as one linear map (None where a transform is not linear, or where
        forming the map costs more than it saves: fewer tokens than input features, with gradients).

        Without gradients (generation, validation) the map is formed once and kept until a parameter changes
        (checked by the parameters' storage and version counters), so every decoding step makes one product.
        """
        parameters = [self.q_proj.weight, self.q_proj.bias, self.k_proj.weight, self.k_proj.bias, self.v_proj.weight,
                      self.v_proj.bias] + [p for p in (self.query_key.weight, self.query_key.bias) if p is not None]
        signature = tuple((p.data_ptr(), p._version) for p in parameters)
        cache = not torch.is_grad_enabled()
        if cache and self._folded_cache is not None and self._folded_cache[0] == signature:
            return self._folded_cache[1]
        if not cache and tokens < self.q_proj.in_features and self.query_key.weight is not None:
            return None
        q_map = self.query_key.fused_linear(self.q_proj, is_query=True)
        k_map = self.query_key.fused_linear(self.k_proj, is_query=False)
        if q_map is None or k_map is None:
            return None
        folded = (torch.cat([q_map[0], k_map[0], self.v_proj.weight]), torch.cat([q_map[1], k_map[1], self.v_proj.bias]))
        self._folded_cache = (signature, folded) if cache else None
        return folded

    def _parallel_self(self, q, k, v, key_padding_mask, attn_mask, packed: Optional[Tensor] = None) -> Tensor:
        """Self-attention over the whole input; ``packed``: the tensor q, k and v are views of, if any (the dense
        forms then return its gradient as one tensor)."""
        if attn_mask is None:
            return self._bidirectional(q, k, v, key_padding_mask, packed)
        self._check_future_mask(attn_mask, q.size(2))
        # Trailing pads (fairseq's targets) need nothing: a causal query never sees later positions.
        order = None
        if has_padding(key_padding_mask) and not is_left_aligned(key_padding_mask):
            order = left_align_order(key_padding_mask)
            q, k, v = gather_time(q, order), gather_time(k, order), gather_time(v, order)
            packed = None
        decay = self.block_decay()
        if causal_dense_is_cheaper(q.size(0), q.size(2)):
            out = causal_dense(q, k, v, self.rate_of_head, self.feature_map, self.eps, self.divide, decay, packed)
        elif self.options.recompute != "causal":
            out = causal_heads(q, k, v, self.rate_of_head, self.options.chunk_size, self.feature_map, self.eps,
                               self.divide, decay, packed, self.reuse_projection_memory)
        else:  # --adamra-recompute causal: each group's op recomputed in the backward pass
            decays = decay.split(self.heads_per_rate) if decay is not None else [None] * len(self.rates)
            out = torch.cat([
                recomputed(_causal_group, qg, kg, vg, group_decay, rate=rate, chunk_size=self.options.chunk_size,
                           feature_map=self.feature_map, eps=self.eps, divide=self.divide)
                for qg, kg, vg, rate, group_decay in zip(
                    self._groups(q), self._groups(k), self._groups(v), self.rates, decays)
            ], dim=1)
        return scatter_time(out, order) if order is not None else out

    def block_decay(self) -> Optional[Tensor]:
        """``(H,)`` decay per complete block of each head: ``gamma_h ^ rate_h`` (None without decay)."""
        if self.decay_logit is None:
            return None
        if torch.is_grad_enabled():
            return torch.exp(nn.functional.logsigmoid(self.decay_logit) * self.head_rates)
        # without gradients (generation: once per step and layer) kept until the parameter changes
        signature = (self.decay_logit.data_ptr(), self.decay_logit._version)
        if self._decay_cache is None or self._decay_cache[0] != signature:
            self._decay_cache = (signature, torch.exp(nn.functional.logsigmoid(self.decay_logit) * self.head_rates))
        return self._decay_cache[1]

    def _bidirectional(self, q, k, v, key_padding_mask, packed: Optional[Tensor] = None) -> Tensor:
        if dense_is_cheaper(k.size(2), q.size(2)):
            return bidirectional_dense(q, k, v, self.rate_of_head, key_padding_mask, self.feature_map, self.eps,
                                       self.divide, packed)
        if state_form_for_all_heads(q.size(2), k.size(2), self.rates, self.feature_map, k.size(-1), v.size(-1)):
            return bidirectional_state(q, k, v, self.rate_of_head, key_padding_mask, self.feature_map, self.eps,
                                       self.divide, packed, self.reuse_projection_memory)
        return torch.cat([
            bidirectional_attention(qg, kg, vg, rate, key_padding_mask, self.feature_map, self.eps, self.divide)
            for qg, kg, vg, rate in zip(self._groups(q), self._groups(k), self._groups(v), self.rates)
        ], dim=1)

    def _check_future_mask(self, attn_mask: Tensor, length: int) -> None:
        if is_causal_marker(attn_mask):
            return
        signature = (attn_mask.data_ptr(), tuple(attn_mask.shape))
        if self._verified_mask == signature:
            return
        if not is_future_mask(attn_mask, length):
            raise ValueError(
                "MultiResolutionAttention accepts only the decoder's triangular future mask as attn_mask"
            )
        self._verified_mask = signature

    def _cross(self, q, key, value, key_padding_mask, incremental_state, static_kv, attn_mask) -> Tensor:
        if attn_mask is not None:
            raise ValueError("MultiResolutionAttention cross-attention does not take an attn_mask")
        cache = self._get_input_buffer(incremental_state) if incremental_state is not None else {}
        if not (static_kv and cache):
            k, v = self._keys_values(key, value)
            if incremental_state is None or not static_kv:  # training: nothing to keep
                if self.softmax_read:
                    return read_memory(q, *self._source_memory(k, v, key_padding_mask))
                return self._bidirectional(q, k, v, key_padding_mask)
            if self.softmax_read:
                names = ("memory_keys", "memory_values", "memory_filled")
                cache = dict(zip(names, self._source_memory(k, v, key_padding_mask)))
            else:
                cache = self._source_cache(k, v, key_padding_mask)
            self._set_input_buffer(incremental_state, cache)
        if self.softmax_read:
            return read_memory(q, cache["memory_keys"], cache["memory_values"], cache["memory_filled"])
        return torch.cat([self._read_cache(qg, cache, group) for group, qg in enumerate(self._groups(q))], dim=1)

    def _source_memory(self, k, v, key_padding_mask) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """``--adamra-cross-memory`` / ``--adamra-cross-blocks``: each rate group's source as memory rows, keys
        ``(B, H, L, N)`` and values ``(B, H, L, D)`` in the accumulation dtype, and which rows hold a token
        (``(B, H, 1, L)`` 1/0; None: all do)."""
        keys, values, filled = [], [], []
        for group, (kg, vg, rate) in enumerate(zip(self._groups(k), self._groups(v), self.rates)):
            if self.memory_queries is not None:
                k_mean, block_filled, values_with_ones = pooled_keys_values(kg, vg, rate, key_padding_mask)
                queries = self.memory_queries.split(self.heads_per_rate)[group]
                group_keys, group_values = compress_source(k_mean, values_with_ones[..., :-1], queries, block_filled)
                group_filled = None
            else:
                group_keys, group_values, group_filled = source_blocks(
                    kg, vg, self.options.blocks, rate, key_padding_mask
                )
                group_filled = group_filled.expand(-1, kg.size(1), -1, -1)
            keys.append(group_keys)
            values.append(group_values)
            filled.append(group_filled)
        all_filled = None if filled[0] is None else torch.cat(filled, dim=1)
        return torch.cat(keys, dim=1), torch.cat(values, dim=1), all_filled

    def _source_cache(self, k, v, key_padding_mask) -> Dict[str, Optional[Tensor]]:
        """Per rate group g: ``summary{g}`` ``(B, h, F, D + 1)``, or, where reading the blocks is cheaper,
        ``keys{g}`` ``(B, h, M, N)``, ``values{g}`` ``(B, h, M, D + 1)`` and ``filled{g}`` (None without padding)."""
        cache: Dict[str, Optional[Tensor]] = {}
        for group, (kg, vg, rate) in enumerate(zip(self._groups(k), self._groups(v), self.rates)):
            k_mean, filled, values = pooled_keys_values(kg, vg, rate, key_padding_mask)
            if cached_blocks_are_cheaper(k_mean.size(2), self.feature_dim, self.head_dim, self.pair_width):
                cache.update({f"keys{group}": k_mean, f"values{group}": values, f"filled{group}": filled})
            else:
                summary = block_features(self.feature_map, k_mean, filled).transpose(2, 3) @ values
                cache[f"summary{group}"] = summary
        return cache

    def _read_cache(self, q: Tensor, cache: Dict[str, Optional[Tensor]], group: int) -> Tensor:
        summary = cache.get(f"summary{group}")
        if summary is not None:
            return attend_state(q, summary, self.feature_map, self.eps, self.divide)
        return attend_blocks(q, cache[f"keys{group}"], cache[f"filled{group}"], cache[f"values{group}"],
                             self.feature_map, self.eps, self.divide)

    def _decode_steps(self, q, k, v, incremental_state) -> Tensor:
        """Causal self-attention one position at a time, carrying the recurrent state."""
        state = self._get_input_buffer(incremental_state)
        if not state:
            batch = q.size(0)
            state = initial_state(
                batch, self.num_heads, k.size(-1), self.head_dim, q.dtype, q.device, self.feature_dim
            )
        outputs = []
        # Without gradients (generation) the state is advanced in place: nothing else reads an earlier step's.
        in_place = not torch.is_grad_enabled()
        for position in range(q.size(2)):  # generation passes one position at a time
            out, state = causal_step(
                q[:, :, position], k[:, :, position], v[:, :, position], state,
                self.rate_of_head, self.feature_map, self.eps, self.divide, self.block_decay(), in_place,
            )
            outputs.append(out.to(q.dtype).unsqueeze(2))
        self._set_input_buffer(incremental_state, state)
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)

    # ----- incremental state (fairseq contract) --------------------------
    def _get_input_buffer(self, incremental_state) -> Dict[str, Optional[Tensor]]:
        result = self.get_incremental_state(incremental_state, "attn_state")
        return result if result is not None else {}

    def _set_input_buffer(self, incremental_state, buffer: Dict[str, Optional[Tensor]]):
        return self.set_incremental_state(incremental_state, "attn_state", buffer)

    @torch.jit.export
    def reorder_incremental_state(self, incremental_state, new_order: Tensor):
        """Selects ``new_order`` (beam reordering, or a smaller batch) on dim 0 of every state tensor.

        The source cache of cross-attention is left alone when the batch keeps its size (the
        contract of fairseq's ``MultiheadAttention``: such a reorder stays within each sentence's beam),
        and every state when ``new_order`` is the identity (greedy search, until a sentence ends).
        """
        buffer = self._get_input_buffer(incremental_state)
        rows = next((tensor.size(0) for tensor in buffer.values() if tensor is not None), None)
        if rows == new_order.size(0) and (
            self.encoder_decoder_attention or torch.equal(new_order, torch.arange(rows, device=new_order.device))
        ):
            return incremental_state
        if not buffer:
            return incremental_state
        if self.encoder_decoder_attention:
            reordered = {
                name: tensor.index_select(0, new_order) if tensor is not None else None
                for name, tensor in buffer.items()
            }
        else:  # the recurrent state of decoder self-attention (reused buffers: only generation reorders it)
            reordered = reorder_state(buffer, new_order, self.rate_of_head, reuse=not torch.is_grad_enabled())
        return self._set_input_buffer(incremental_state, reordered)

    def balance_loss(self) -> Optional[Tensor]:
        """The gate's load-balancing loss of the last training forward (top1 routing), else None."""
        return self.gate.balance_loss
