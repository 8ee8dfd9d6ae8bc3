"""The fast AdaMRA ops against the naive reference and against closed-form limit cases."""

import pytest
import torch
import torch.nn.functional as F

from adamra_fairseq.ops.bidirectional import (
    attend_blocks, attend_state, bidirectional_attention, block_features, cached_blocks_are_cheaper, normalise,
    pooled_keys_values, quadratic_is_cheaper,
)
from adamra_fairseq.ops.causal import causal_attention
from adamra_fairseq.ops.dense import (
    bidirectional_dense, causal_dense, causal_dense_is_cheaper, dense_is_cheaper,
)
from adamra_fairseq.ops.heads import rate_groups, reusable_for_gradient, time_major_heads
from adamra_fairseq.ops.feature_maps import FEATURE_MAPS, elu_plus_one, feature_width, relu, softmax_pair, taylor2
from adamra_fairseq.ops.naive import naive_adamra_attention
from adamra_fairseq.ops.padding import left_aligned_keys_values
from adamra_fairseq.ops.recompute import recomputed
from adamra_fairseq.ops import causal, dense, pooling, recurrent, state_attention
from adamra_fairseq.ops.recurrent import RESCALE_BELOW, causal_step, initial_state
from adamra_fairseq.ops.state_attention import bidirectional_state

TOL = 1e-9


def random_qkv(batch=3, heads=2, length=13, dim=5, seed=0, src_len=None):
    generator = torch.Generator().manual_seed(seed)
    src_len = src_len or length
    q = torch.randn(batch, heads, length, dim, generator=generator, dtype=torch.float64)
    k = torch.randn(batch, heads, src_len, dim, generator=generator, dtype=torch.float64)
    v = torch.randn(batch, heads, src_len, dim, generator=generator, dtype=torch.float64)
    return q, k, v


def left_padding_mask(lengths, total):
    """Sources are left-padded in fairseq: the pads come first."""
    positions = torch.arange(total)[None, :]
    return positions < (total - torch.tensor(lengths))[:, None]


@pytest.mark.parametrize("rate", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("feature_map", [elu_plus_one, relu, FEATURE_MAPS["dpfp2"], taylor2])
@pytest.mark.parametrize("form", ["state", "quadratic"])
def test_bidirectional_matches_naive_on_left_padded_batches(rate, feature_map, form):
    """(taylor2's quadratic form takes its weights from q.kbar without building the features.)"""
    q, k, v = random_qkv(length=11, src_len=13)
    mask = left_padding_mask([13, 7, 1], 13)
    expected = naive_adamra_attention(q, k, v, [rate] * 2, mask, feature_map=feature_map)
    actual = bidirectional_attention(q, k, v, rate, mask, feature_map=feature_map, form=form)
    assert torch.allclose(actual, expected, atol=TOL)


def test_long_inputs_take_the_state_form_of_all_heads_unless_the_per_group_forms_are_much_cheaper():
    from adamra_fairseq.ops.bidirectional import state_form_for_all_heads

    hedgehog, rates = FEATURE_MAPS["hedgehog"], (1, 2, 4, 8)
    # self-attention from 300 tokens: at most rate 8's quadratic form is cheaper, by a few percent
    assert state_form_for_all_heads(384, 384, rates, hedgehog, 64, 64)
    assert state_form_for_all_heads(4096, 4096, rates, hedgehog, 64, 64)
    # a short target over a long source: the quadratic form per group is far cheaper
    assert not state_form_for_all_heads(30, 4096, rates, hedgehog, 64, 64)


def test_bidirectional_form_choice_follows_the_multiply_adds():
    # MT sentences with hedgehog features (F = 2 * 64): the quadratic order is cheaper
    assert quadratic_is_cheaper(queries=30, blocks=30, features=128, value_width=64)
    # long inputs: the state is the linear-cost order
    assert not quadratic_is_cheaper(queries=4096, blocks=4096, features=128, value_width=64)
    # taylor2 (F = 1 + N + N(N+1)/2): its weights come from q.kbar, N wide, so it stays quadratic far longer
    assert quadratic_is_cheaper(queries=256, blocks=256, features=561, value_width=32, pair_width=32)
    assert not quadratic_is_cheaper(queries=256, blocks=256, features=561, value_width=32)
    with pytest.raises(ValueError, match="unknown form"):
        bidirectional_attention(*random_qkv(), rate=1, form="fast")


def test_decoding_cache_form_follows_the_multiply_adds_per_step():
    # Taylor features of 32-wide heads over a 30-token source: 30 x (32 + 33) < 561 x 33
    assert cached_blocks_are_cheaper(blocks=30, features=561, value_width=32, pair_width=32)
    # the same map over a 1024-token source: the summary, fixed size, is cheaper
    assert not cached_blocks_are_cheaper(blocks=1024, features=561, value_width=32, pair_width=32)
    # hedgehog (F = 2N, no dot-product shortcut): the blocks only for very short sources
    assert cached_blocks_are_cheaper(blocks=10, features=64, value_width=32, pair_width=64)
    assert not cached_blocks_are_cheaper(blocks=30, features=64, value_width=32, pair_width=64)


@pytest.mark.parametrize("name", ["elu", "taylor2", "hedgehog"])
def test_cached_blocks_and_summary_read_the_same(name):
    """attend_blocks (pooled keys/values) == attend_state (their summary) == naive, with pads and rate 2."""
    q, k, v = random_qkv(batch=2, heads=2, length=9, seed=21)
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[1, :4] = True
    feature_map = FEATURE_MAPS[name]
    expected = naive_adamra_attention(q, k, v, [2, 2], key_padding_mask=mask, feature_map=feature_map)
    k_mean, filled, values = pooled_keys_values(k, v, 2, mask)
    summary = block_features(feature_map, k_mean, filled).transpose(2, 3) @ values
    assert torch.allclose(attend_state(q, summary, feature_map), expected, atol=TOL)
    assert torch.allclose(attend_blocks(q, k_mean, filled, values, feature_map), expected, atol=TOL)


@pytest.mark.parametrize("form", ["state", "quadratic"])
def test_bidirectional_pads_anywhere_never_enter_a_mean(form):
    q, k, v = random_qkv(length=9)
    mask = torch.zeros(3, 9, dtype=torch.bool)
    mask[0, [0, 4, 8]] = True  # scattered pads
    mask[1, -2:] = True  # right padding
    expected = naive_adamra_attention(q, k, v, [3, 3], mask)
    assert torch.allclose(bidirectional_attention(q, k, v, 3, mask, form=form), expected, atol=TOL)
    # and the values at pad positions do not matter
    k2, v2 = k.clone(), v.clone()
    k2[mask[:, None, :, None].expand_as(k)] = 1e3
    v2[mask[:, None, :, None].expand_as(v)] = -1e3
    assert torch.allclose(bidirectional_attention(q, k2, v2, 3, mask, form=form), expected, atol=TOL)


@pytest.mark.parametrize("rate", [1, 2, 3, 4])
@pytest.mark.parametrize("chunk_factor", [1, 2, 5])
@pytest.mark.parametrize("length", [1, 7, 13, 24])
def test_causal_matches_naive(rate, chunk_factor, length):
    q, k, v = random_qkv(length=length, seed=length)
    expected = naive_adamra_attention(q, k, v, [rate] * 2, causal=True)
    actual = causal_attention(q, k, v, rate, chunk_size=rate * chunk_factor)
    assert torch.allclose(actual, expected, atol=TOL)


def recurrent_attention(q, k, v, head_rates, feature_map=elu_plus_one, divide=True, feature_dim=None,
                        block_decay=None, in_place=False, form="blocks"):
    """Every position through :func:`causal_step`, one at a time, from an empty state of ``form``:
    ``(B, H, T, Dv)``."""
    batch, heads, length, dim = q.shape
    state = initial_state(batch, heads, dim, v.size(-1), q.dtype, q.device, feature_dim, form)
    outputs = []
    for t in range(length):
        out, state = causal_step(q[:, :, t], k[:, :, t], v[:, :, t], state, torch.tensor(head_rates),
                                 feature_map, divide=divide, block_decay=block_decay, in_place=in_place)
        outputs.append(out)
    return torch.stack(outputs, dim=2)


@pytest.mark.parametrize("name", ["relu", "dpfp1", "dpfp2", "taylor2", "hedgehog"])
def test_causal_and_recurrent_match_naive_for_other_feature_maps(name):
    q, k, v = random_qkv(heads=2, length=11, seed=8)
    feature_map = FEATURE_MAPS[name]
    expected = naive_adamra_attention(q, k, v, [3, 3], causal=True, feature_map=feature_map)
    for chunk_size in (6, 12):  # two chunks (a carried state), one chunk (no state)
        assert torch.allclose(causal_attention(q, k, v, 3, chunk_size, feature_map), expected, atol=TOL)
    for form in ("blocks", "summary"):
        recurrent = recurrent_attention(q, k, v, [3, 3], feature_map, feature_dim=feature_width(name, 5), form=form)
        assert torch.allclose(recurrent, expected, atol=TOL)


@pytest.mark.parametrize("name", ["elu", "taylor2", "hedgehog"])
def test_without_denominator_every_path_matches_the_naive_weighted_sum(name):
    """``divide=False`` (the output-norm normaliser): the raw sum of weighted slot values, in every path."""
    feature_map = FEATURE_MAPS[name]
    q, k, v = random_qkv(heads=2, length=11, src_len=13, seed=12)
    mask = left_padding_mask([13, 8, 2], 13)
    expected = naive_adamra_attention(q, k, v, [4, 4], mask, feature_map=feature_map, divide=False)
    for form in ("state", "quadratic"):
        actual = bidirectional_attention(q, k, v, 4, mask, feature_map=feature_map, divide=False, form=form)
        assert torch.allclose(actual, expected, atol=TOL)
    q, k, v = random_qkv(heads=2, length=11, seed=13)
    expected = naive_adamra_attention(q, k, v, [2, 2], causal=True, feature_map=feature_map, divide=False)
    assert torch.allclose(causal_attention(q, k, v, 2, 4, feature_map, divide=False), expected, atol=TOL)
    recurrent = recurrent_attention(q, k, v, [2, 2], feature_map, divide=False, feature_dim=feature_width(name, 5))
    assert torch.allclose(recurrent, expected, atol=TOL)
    # and dividing this sum by the summed weights gives the usual output
    weights_only = naive_adamra_attention(q, k, torch.ones_like(v[..., :1]), [2, 2], causal=True,
                                          feature_map=feature_map, divide=False)
    divided = naive_adamra_attention(q, k, v, [2, 2], causal=True, feature_map=feature_map, eps=0.0)
    assert torch.allclose(expected / weights_only, divided, atol=TOL)


def test_dpfp_features_written_out():
    """DPFP with nu = 2 of x = (a, b): r = relu(a, b, -a, -b), features r * roll(r, 1) then r * roll(r, 2)."""
    x = torch.tensor([[2.0, -3.0], [1.5, 0.5]], dtype=torch.float64)
    for row, (a, b) in zip(FEATURE_MAPS["dpfp2"](x), x.tolist()):
        r = [max(a, 0), max(b, 0), max(-a, 0), max(-b, 0)]
        expected = [r[i] * r[i - 1] for i in range(4)] + [r[i] * r[i - 2] for i in range(4)]
        assert row.tolist() == pytest.approx(expected)
    widths = {name: feature_width(name, 6) for name in FEATURE_MAPS}
    assert widths == {"elu": 6, "relu": 6, "dpfp1": 12, "dpfp2": 24, "taylor2": 1 + 6 + 21, "hedgehog": 12, "t2r": 6}


def test_taylor2_kernel_is_the_second_order_taylor_polynomial_of_exp():
    q, k, _ = random_qkv(batch=1, heads=1, length=7, dim=5, seed=11)
    kernel = taylor2(q) @ taylor2(k).transpose(-1, -2)
    dots = q @ k.transpose(-1, -2)
    assert torch.allclose(kernel, 1 + dots + dots ** 2 / 2, atol=1e-12)
    assert bool((kernel >= 0.5 - 1e-12).all())


def test_softmax_pair_halves_are_distributions_that_peak_where_the_input_does():
    x = torch.tensor([[3.0, -1.0, 0.5]], dtype=torch.float64)
    features = softmax_pair(x)
    assert features.shape == (1, 6)
    assert torch.allclose(features[:, :3].sum(-1), torch.ones(1, dtype=torch.float64))
    assert torch.allclose(features[:, 3:].sum(-1), torch.ones(1, dtype=torch.float64))
    assert features[0, :3].argmax() == 0 and features[0, 3:].argmax() == 1
    assert torch.allclose(features[0, :3], torch.exp(x[0]) / torch.exp(x[0]).sum())


def test_softmax_pair_is_the_same_whichever_way_the_halves_are_built():
    """Small inputs (decoding steps) build [u, -u] by a broadcast product, large ones by two writes."""
    from adamra_fairseq.ops import feature_maps

    small = torch.randn(3, 2, 8, dtype=torch.float64)
    large = torch.randn(feature_maps.HALVES_BY_PRODUCT_BELOW // 8 + 1, 8, dtype=torch.float64)
    for x in (small, large):
        expected = torch.cat([torch.softmax(x, -1), torch.softmax(-x, -1)], dim=-1)
        assert torch.allclose(softmax_pair(x), expected, atol=1e-15)
        strided = x.transpose(0, -1).contiguous().transpose(0, -1)
        assert torch.allclose(softmax_pair(strided), expected, atol=1e-15)


def test_softmax_pair_backward_passes_the_gradient_check_and_keeps_only_its_output():
    x = torch.randn(3, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(softmax_pair, (x,))
    upstream = torch.randn(3, 5, 12, dtype=torch.float64)
    written_out = torch.cat([torch.softmax(x, dim=-1), torch.softmax(-x, dim=-1)], dim=-1)
    expected = torch.autograd.grad(written_out, x, upstream)[0]
    assert torch.allclose(torch.autograd.grad(softmax_pair(x), x, upstream)[0], expected, atol=1e-12)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        features = softmax_pair(x)
    # one tensor, the features' own storage (which the product that reads them next keeps anyway)
    assert len(saved) == 1 and saved[0].untyped_storage().data_ptr() == features.untyped_storage().data_ptr()
    assert saved[0].numel() == features.numel()


@pytest.mark.parametrize("divide", [True, False])
@pytest.mark.parametrize("name", ["elu", "relu", "hedgehog", "taylor2"])  # taylor2: no formula, a recomputed graph
def test_state_form_backward_passes_the_gradient_check_and_equals_the_naive_gradients(name, divide):
    """The state form's hand-written backward pass (ops/state_attention.py), with pads and several rates."""
    q, k, v = (x.requires_grad_() for x in random_qkv(batch=3, heads=2, length=7, dim=3, seed=31, src_len=9))
    mask = left_padding_mask([9, 5, 1], 9)
    feature_map = FEATURE_MAPS[name]
    upstream = torch.randn(3, 2, 7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    for rate in (1, 2, 4):
        def state_form(q, k, v):
            return bidirectional_attention(q, k, v, rate, mask, feature_map=feature_map, divide=divide, form="state")

        assert torch.autograd.gradcheck(state_form, (q, k, v))
        naive = naive_adamra_attention(q, k, v, [rate] * 2, mask, feature_map=feature_map, divide=divide)
        expected = torch.autograd.grad(naive, (q, k, v), upstream)
        actual = torch.autograd.grad(state_form(q, k, v), (q, k, v), upstream)
        for got, want in zip(actual, expected):
            assert torch.allclose(got, want, atol=1e-9)


def test_state_form_keeps_its_inputs_and_per_query_tensors_not_the_features():
    """Hedgehog features are 2N wide: the backward pass recomputes them instead of keeping them."""
    batch, heads, length, width = 2, 2, 50, 4
    q, k, v = (x.requires_grad_() for x in random_qkv(batch=batch, heads=heads, length=length, dim=width, seed=8))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        bidirectional_attention(q, k, v, 1, feature_map=FEATURE_MAPS["hedgehog"], form="state")
    per_query = batch * heads * length
    stored = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() // 8 for t in saved}
    # q, k, v (N wide each) and the denominator (1) per query, not the output; [S | z] (F x (Dv + 1)) per head
    features = 2 * width
    assert sum(stored.values()) == per_query * (3 * width + 1) + batch * heads * features * (width + 1)
    assert not any(t.size(-1) == features and t.size(-2) == length for t in saved)


@pytest.mark.parametrize("length", [12, 13, 3])
def test_block_partition_pools_as_block_means_of_left_aligned_rows_for_any_padding(length):
    """pooling.pooled (blocks from each row's first real token, any pads, strided inputs) equals block_means of
    the rows with their real tokens moved to the front; pooling.unpooled is its transpose."""
    generator = torch.Generator().manual_seed(length)
    storage = torch.randn(length, 3, 4, 5, dtype=torch.float64, generator=generator)
    x = storage.permute(1, 2, 0, 3)[:, 1:3]  # a head slice of a time-major tensor
    mask = torch.zeros(3, length, dtype=torch.bool)
    mask[1, :2] = True
    mask[2, -1] = True
    mask[0, length // 2] = True
    for rate in (1, 2, 3, 4, 5):
        for pads in (None, mask):
            partition = pooling.block_partition(None if pads is None else ~pads, length, rate, torch.float64,
                                                x.device, batch=3)
            keys, _, lengths, padded = left_aligned_keys_values(x, x, pads)
            expected, sizes = pooling.block_means(keys, lengths, rate, padded)
            assert torch.allclose(pooling.pooled(x, partition), expected, atol=1e-12)
            assert partition.filled is None if pads is None else torch.equal(partition.filled[:, 0, 0] > 0, sizes > 0)
            grad = torch.randn(expected.shape, dtype=torch.float64, generator=generator)
            other = torch.randn(x.shape, dtype=torch.float64, generator=generator)
            transposed = torch.empty(length, 3, 2, 5, dtype=torch.float64).permute(1, 2, 0, 3)
            pooling.unpooled(grad, partition, transposed)
            assert torch.allclose((pooling.pooled(other, partition) * grad).sum(), (other * transposed).sum())


@pytest.mark.parametrize("divide", [True, False])
@pytest.mark.parametrize("name", ["elu", "hedgehog", "taylor2"])  # taylor2: autograd through the forward steps
def test_chunked_causal_op_of_all_heads_equals_the_naive_reference_with_mixed_rates(name, divide):
    """causal_heads with a different rate and decay per head group, several chunks and a length that is not a
    multiple of the chunk: values and the gradients of q, k and v against the naive reference, the decay's
    gradient against the dense causal form's (the naive reference takes the decay as numbers), and the
    gradient check."""
    q, k, v = (x.requires_grad_() for x in random_qkv(batch=2, heads=4, length=15, dim=3, seed=17))
    decay = torch.tensor([0.9, 0.7, 0.5, 0.8], dtype=torch.float64, requires_grad=True)
    rates = [1, 2, 2, 3]
    feature_map = FEATURE_MAPS[name]

    def chunked(q, k, v, decay):
        return causal.causal_heads(q, k, v, rates, 6, feature_map, divide=divide, block_decay=decay)

    expected = naive_adamra_attention(q, k, v, rates, causal=True, feature_map=feature_map, divide=divide,
                                      block_decay=decay.tolist())
    assert torch.allclose(chunked(q, k, v, decay), expected, atol=TOL)
    upstream = torch.randn_like(expected)
    got = torch.autograd.grad(chunked(q, k, v, decay), (q, k, v, decay), upstream)
    for grad, want in zip(got, torch.autograd.grad(expected, (q, k, v), upstream)):
        assert torch.allclose(grad, want, atol=1e-9)
    dense_form = causal_dense(q, k, v, rates, feature_map, divide=divide, block_decay=decay)
    assert torch.allclose(got[3], torch.autograd.grad(dense_form, decay, upstream)[0], atol=1e-9)
    if name == "hedgehog" and divide:
        assert torch.autograd.gradcheck(chunked, (q, k, v, decay))
    with pytest.raises(ValueError, match="not a multiple of rate 4"):
        causal.causal_heads(q, k, v, [1, 2, 4, 4], 6)


def test_state_form_keeps_the_stacked_projection_not_copies_of_its_views():
    """In the model q, k and v are head views of the stacked q/k/v projection: the state form keeps that tensor
    itself for the backward pass (its block means and features are recomputed there), no copies of its views
    and nothing else as long as the input but the denominator."""
    heads, length, batch, width = 4, 12, 2, 3
    packed = torch.randn(length, batch, 3 * heads * width, dtype=torch.float64, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        bidirectional_state(*time_major_heads(packed, (heads * width,) * 3, heads), [1, 2, 4, 4],
                            feature_map=FEATURE_MAPS["hedgehog"], packed=packed)
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() // 8 for t in saved}
    features = 2 * width
    assert storages.pop(packed.untyped_storage().data_ptr()) == packed.numel()
    assert sorted(storages.values()) == [batch * heads * length, batch * heads * features * (width + 1)]


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("divide", [True, False])
@pytest.mark.parametrize("name", ["elu", "hedgehog", "taylor2"])  # taylor2: no formula, a recomputed graph
def test_state_form_of_all_heads_equals_the_naive_reference_with_mixed_rates(name, divide, chunked, monkeypatch):
    """bidirectional_state with a different rate per head group, pads before, inside and after the real tokens,
    a source of another length than the queries and a ragged last block: values, gradients and gradcheck; in
    one chunk, and in chunks of two positions (queries and key blocks go through the features chunk by chunk)."""
    if chunked:  # two positions of 3 rows of 5 heads per chunk
        monkeypatch.setattr(state_attention, "CHUNK_FEATURE_ELEMENTS", 2 * 3 * 5 * feature_width(name, 3))
    q, k, v = (x.requires_grad_() for x in random_qkv(batch=3, heads=5, length=6, dim=3, seed=12, src_len=11))
    rates = [1, 3, 3, 2, 4]
    mask = torch.zeros(3, 11, dtype=torch.bool)
    mask[0, :3] = True  # fairseq's left padding
    mask[1, 4:6] = True  # pads inside: blocks count real tokens
    mask[2, 9:] = True
    feature_map = FEATURE_MAPS[name]

    def state_form(q, k, v):
        return bidirectional_state(q, k, v, rates, mask, feature_map, divide=divide)

    expected = naive_adamra_attention(q, k, v, rates, mask, feature_map=feature_map, divide=divide)
    assert torch.allclose(state_form(q, k, v), expected, atol=TOL)
    upstream = torch.randn_like(expected)
    for got, want in zip(torch.autograd.grad(state_form(q, k, v), (q, k, v), upstream),
                         torch.autograd.grad(expected, (q, k, v), upstream)):
        assert torch.allclose(got, want, atol=1e-9)
    if not chunked:  # (the gradients above already hold chunk by chunk)
        assert torch.autograd.gradcheck(state_form, (q, k, v))
    with torch.no_grad():
        assert torch.allclose(state_form(q, k, v), expected, atol=TOL)


def test_recomputed_causal_op_passes_the_gradient_check_and_equals_the_naive_gradients():
    """ops/recompute.py around the chunked causal op: decay, several rates, two chunks."""
    q, k, v = (x.requires_grad_() for x in random_qkv(batch=2, heads=1, length=10, dim=3, seed=41))
    decay = torch.tensor([0.7], dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 1, 10, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for rate in (1, 2):
        def chunked(q, k, v, g):
            return recomputed(lambda q, k, v, g: causal_attention(q, k, v, rate, 4, FEATURE_MAPS["hedgehog"],
                                                                block_decay=g), q, k, v, g)

        assert torch.autograd.gradcheck(chunked, (q, k, v, decay))
        # the naive reference takes the decay as numbers: its gradient is checked against the plain op
        naive = naive_adamra_attention(q, k, v, [rate], causal=True, feature_map=FEATURE_MAPS["hedgehog"],
                                       block_decay=decay.tolist())
        plain = causal_attention(q, k, v, rate, 4, FEATURE_MAPS["hedgehog"], block_decay=decay)
        inputs = (q, k, v, decay)
        got = torch.autograd.grad(chunked(*inputs), inputs, upstream)
        want = torch.autograd.grad(naive, inputs[:3], upstream) + torch.autograd.grad(plain, decay, upstream)
        for actual, expected in zip(got, want):
            assert torch.allclose(actual, expected, atol=1e-9)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        chunked(q, k, v, decay)
    assert sorted(t.numel() for t in saved) == [1, q.numel(), k.numel(), v.numel()]  # its inputs, nothing else


@pytest.mark.parametrize("name", ["elu", "relu", "hedgehog"])
@pytest.mark.parametrize("divide", [True, False])
def test_chunked_causal_backward_by_formula_gives_the_naive_references_gradients(name, divide):
    """The chunked op's hand-written backward pass against autograd through the naive reference (float64): rates
    1 to 3, several chunks, a length that is not a whole number of chunks (padded inside), with a learned decay
    and without. The decay's gradient against autograd through the same forward steps."""
    feature_map = FEATURE_MAPS[name]
    q, k, v = (x.requires_grad_() for x in random_qkv(batch=2, heads=2, length=17, dim=4, seed=42))
    upstream = torch.randn(2, 2, 17, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    for rate in (1, 2, 3):
        for decay in (None, torch.tensor([0.8, 0.55], dtype=torch.float64, requires_grad=True)):
            out = causal_attention(q, k, v, rate, 2 * rate, feature_map, divide=divide, block_decay=decay)
            assert any("_ChunkedCausalBackward" in type(f).__name__ for f in _graph_functions(out.grad_fn))
            inputs = (q, k, v) if decay is None else (q, k, v, decay)
            actual = torch.autograd.grad(out, inputs, upstream)
            numbers = None if decay is None else decay.tolist()
            naive = naive_adamra_attention(q, k, v, [rate] * 2, causal=True, feature_map=feature_map, divide=divide,
                                           block_decay=numbers)
            for got, want in zip(actual, torch.autograd.grad(naive, (q, k, v), upstream)):
                assert torch.allclose(got, want, atol=1e-9)
            if decay is not None:
                chunk = causal.chunk_length(17, rate, 2 * rate)  # 8, 8 and 9: three, three and two chunks
                layout = causal.ChunkLayout(rate, chunk, -(-17 // chunk))
                padded = [F.pad(x, (0, 0, 0, layout.num_chunks * layout.chunk_size - 17)) for x in (q, k, v)]
                running = [causal.running_block_means(x, rate) for x in padded[1:]]
                steps = causal._numerator_and_sum(padded[0], *running, decay, layout, feature_map)
                by_autograd = normalise(steps, 1e-6, divide)[:, :, :17]
                assert torch.allclose(by_autograd, out, atol=1e-12)
                assert torch.allclose(actual[3], torch.autograd.grad(by_autograd, decay, upstream)[0], atol=1e-9)


def _graph_functions(node, seen=None):
    """Every autograd node reachable from ``node``."""
    seen = set() if seen is None else seen
    if node is not None and node not in seen:
        seen.add(node)
        for parent, _ in node.next_functions:
            _graph_functions(parent, seen)
    return seen


def test_chunked_causal_backward_passes_the_gradient_check_and_keeps_no_features():
    """gradcheck through the formula backward with decay and three chunks; what it keeps for the backward pass
    is N wide (q, k, v, the output) or one column (the normaliser), never the 2N-wide features or scores."""
    q, k, v = (x.requires_grad_() for x in random_qkv(batch=2, heads=2, length=11, dim=3, seed=43))
    decay = torch.tensor([0.7, 0.95], dtype=torch.float64, requires_grad=True)
    hedgehog = FEATURE_MAPS["hedgehog"]
    assert torch.autograd.gradcheck(lambda q, k, v, g: causal_attention(q, k, v, 2, 4, hedgehog, block_decay=g),
                                    (q, k, v, decay))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        causal_attention(q, k, v, 2, 4, hedgehog, block_decay=decay)
    assert saved and max(t.size(-1) for t in saved if t.dim() == 4) == 3


def test_decay_weights_never_fall_into_the_subnormal_range():
    """Powers of a decay far back are taken as 0 once negligible (subnormal floats are many times slower on a
    CPU); in the chunked op's carry and in the dense form's mask, with the decay's gradient 0 there too."""
    decay = torch.tensor([0.5, 0.9, 0.999], requires_grad=True)
    exponents = torch.arange(-1, 2000, dtype=torch.float32)
    powers = causal.decay_powers(decay, exponents)
    tiny = torch.finfo(torch.float32).tiny
    assert bool(((powers == 0) | (powers >= tiny)).all()) and bool((powers == 0).any())
    assert torch.equal(powers[:, 1:10], decay.detach()[:, None] ** exponents[1:10])  # near powers unchanged
    upstream = torch.ones_like(powers)
    (by_autograd,) = torch.autograd.grad(powers, decay, upstream)
    assert torch.allclose(causal.decay_powers_backward(decay.detach(), exponents, upstream), by_autograd)
    _, mask = dense.causal_matrices(256, [1, 1, 2], torch.float32, torch.device("cpu"), decay)
    assert bool(((mask == 0) | (mask >= tiny)).all())


def test_running_means_backward_is_the_transpose_of_the_running_means():
    x = torch.randn(2, 3, 12, 4, dtype=torch.float64, requires_grad=True)
    grad = torch.randn_like(x)
    for rate in (1, 2, 3, 4):
        by_cumsum = causal.running_block_means(x, rate)  # with gradients: a cumulative sum autograd differentiates
        (expected,) = torch.autograd.grad(by_cumsum, x, grad)
        assert torch.allclose(causal.running_block_means_backward(grad, rate), expected, atol=1e-12)
        with torch.no_grad():  # without: in-place sums of strided slices
            assert torch.allclose(causal.running_block_means(x, rate), by_cumsum, atol=1e-12)
    blocks = x.detach()[:, :, :4].clone()
    blocks[:, :, 1] = 3 * blocks[:, :, 0]  # a limit case by hand: means of 1 .. 4 positions
    with torch.no_grad():
        means = causal.running_block_means(blocks, 4)
    assert torch.allclose(means[:, :, 1], 2 * blocks[:, :, 0], atol=1e-12)
    assert torch.allclose(means[:, :, 3], blocks.mean(dim=2), atol=1e-12)


def test_long_inputs_take_longer_chunks_with_the_same_numbers():
    """The chunk grows to about 2 sqrt(T) (a multiple of the rate): a fixed chunk's decayed carry is quadratic
    in the number of chunks. The numbers do not change (the dense form computes them independently)."""
    assert causal.chunk_length(16384, 1, 64) == 256 and causal.chunk_length(4096, 8, 64) == 128
    assert causal.chunk_length(1000, 3, 6) == 63 and causal.chunk_length(300, 4, 64) == 64
    assert causal.chunk_length(10, 2, 64) == 10  # one chunk of the sequence's blocks, not padded to 64
    q, k, v = random_qkv(batch=2, heads=2, length=301, dim=4, seed=31)
    decay = torch.tensor([0.9, 0.99], dtype=torch.float64)
    chunked = causal_attention(q, k, v, 2, chunk_size=2, block_decay=decay)
    assert causal.chunk_length(301, 2, 2) == 34  # 9 chunks instead of 151
    assert torch.allclose(chunked, causal_dense(q, k, v, [2, 2], block_decay=decay), atol=TOL)


def test_causal_rejects_chunk_not_multiple_of_rate():
    q, k, v = random_qkv()
    with pytest.raises(ValueError, match="multiple"):
        causal_attention(q, k, v, rate=4, chunk_size=6)


@pytest.mark.parametrize("rate", [1, 3, 4])
def test_causal_never_sees_the_future(rate):
    q, k, v = random_qkv(length=20, seed=5)
    base = causal_attention(q, k, v, rate, chunk_size=4 * rate)
    for t in (0, 5, 11, 18):
        q2, k2, v2 = q.clone(), k.clone(), v.clone()
        for x in (q2, k2, v2):
            x[:, :, t + 1 :] = torch.randn_like(x[:, :, t + 1 :]) * 10
        changed = causal_attention(q2, k2, v2, rate, chunk_size=4 * rate)
        assert torch.allclose(changed[:, :, : t + 1], base[:, :, : t + 1], atol=TOL)


def test_recurrent_steps_match_naive_for_mixed_rates():
    q, k, v = random_qkv(heads=4, length=17, seed=3)
    rates = [1, 2, 3, 5]
    expected = naive_adamra_attention(q, k, v, rates, causal=True)
    for form in ("blocks", "summary"):
        assert torch.allclose(recurrent_attention(q, k, v, rates, form=form), expected, atol=TOL)


@pytest.mark.parametrize("decay", [None, [0.9, 0.5, 0.8, 0.3]])
def test_in_place_steps_fold_only_completing_heads_and_match_naive(decay):
    """Rates 1, 2, 4, 4: some steps fold one head, some two, some all four (the three update paths)."""
    q, k, v = random_qkv(heads=4, length=13, seed=25)
    rates = [1, 2, 4, 4]
    block_decay = None if decay is None else torch.tensor(decay, dtype=torch.float64)
    actual = recurrent_attention(q, k, v, rates, FEATURE_MAPS["hedgehog"], feature_dim=10, block_decay=block_decay,
                                 in_place=True, form="summary")
    expected = naive_adamra_attention(q, k, v, rates, causal=True, feature_map=FEATURE_MAPS["hedgehog"],
                                      block_decay=decay)
    assert torch.allclose(actual, expected, atol=TOL)
    # without in_place a step leaves the state it was given as it was
    for form in ("blocks", "summary"):
        state = initial_state(3, 4, 5, 5, q.dtype, q.device, form=form)
        before = {name: tensor.clone() for name, tensor in state.items()}
        causal_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], state, torch.tensor(rates))
        assert state.keys() == before.keys() and all(torch.equal(state[name], before[name]) for name in state)


@pytest.mark.parametrize("decay", [None, [0.9, 0.5, 0.8, 0.3]])
def test_blocks_state_switches_once_to_the_summary_and_matches_naive_on_both_sides(decay):
    """The blocks form stores one block per r tokens until reading them costs as much as reading [S | z]
    would, then becomes the summary form: the outputs equal the naive reference before, at and after the
    switch, and the state never holds more numbers than the summary form's (plus one block per head)."""
    rates = [1, 2, 4, 4]
    batch, heads, dim, length = 2, 4, 3, 40
    q, k, v = random_qkv(batch=batch, heads=heads, length=length, dim=dim, seed=31)
    block_decay = None if decay is None else torch.tensor(decay, dtype=torch.float64)
    expected = naive_adamra_attention(q, k, v, rates, causal=True, block_decay=decay)
    summary_numbers = sum(x.numel() for x in initial_state(batch, heads, dim, dim, q.dtype, q.device,
                                                             form="summary").values())
    state = initial_state(batch, heads, dim, dim, q.dtype, q.device)
    forms, outputs = [], []
    for t in range(length):
        previous = state
        out, state = causal_step(q[:, :, t], k[:, :, t], v[:, :, t], state, rates, block_decay=block_decay)
        outputs.append(out)
        forms.append("summary" if "summary" in state else "blocks")
        if forms[-1] == "blocks":
            assert sum(x.numel() for x in state.values()) <= summary_numbers + batch * heads * (2 * dim + 1)
        elif forms[-2:] == ["blocks", "summary"]:  # the switch: same numbers as stepping in the summary form
            stepped = recurrent_state(q, k, v, rates, t + 1, block_decay)
            assert torch.allclose(state["scale"][..., None] * state["summary"],
                                  stepped["scale"][..., None] * stepped["summary"], atol=TOL)
    assert torch.allclose(torch.stack(outputs, dim=2), expected, atol=TOL)
    # elu + 1 of width 3: a head's [S | z] is 3 x 4 = 12 numbers, a block 3 + 4 = 7: the switch comes once the
    # heads hold 12 / 7 blocks on average: after 3 tokens they hold (3 + 1 + 0 + 0) / 4, after 4 (4 + 2 + 1 + 1) / 4
    assert forms.index("summary") == 3 and set(forms[3:]) == {"summary"}
    with pytest.raises(ValueError, match="state form"):
        initial_state(batch, heads, dim, dim, q.dtype, q.device, form="dense")


@pytest.mark.parametrize("rates", [[1, 2, 4, 4], [4, 1, 3, 2]])
@pytest.mark.parametrize("decay", [None, [0.9, 0.5, 0.8, 0.3]])
def test_blocks_written_in_place_match_naive_through_growth_and_the_switch(rates, decay):
    """Decoding without gradients writes the open blocks into spare slots after the stored ones, and keeps
    the complete ones there (grown when full, never past the most the blocks form stores): the outputs equal the naive reference before and after the capacity grows
    and after the switch to the summary; rates 4, 1, 3, 2 complete blocks of heads that are not the first."""
    batch, heads, dim, length = 2, 4, 8, 24
    q, k, v = random_qkv(batch=batch, heads=heads, length=length, dim=dim, seed=32)
    hedgehog = FEATURE_MAPS["hedgehog"]
    block_decay = None if decay is None else torch.tensor(decay, dtype=torch.float64)
    expected = naive_adamra_attention(q, k, v, rates, causal=True, feature_map=hedgehog, block_decay=decay)
    most = recurrent._most_slots(tuple(rates), 2 * dim, dim)
    state = initial_state(batch, heads, dim, dim, q.dtype, q.device, 2 * dim)
    outputs, capacities = [], []
    with torch.no_grad():
        for t in range(length):
            out, state = causal_step(q[:, :, t], k[:, :, t], v[:, :, t], state, rates, hedgehog,
                                     block_decay=block_decay, in_place=True)
            outputs.append(out)
            if "features" in state:
                capacities.append(state["features"].size(1))
                assert state["values"].size(1) == capacities[-1] <= most + heads  # and a slot per open block
    assert torch.allclose(torch.stack(outputs, dim=2), expected, atol=TOL)
    assert capacities[0] == recurrent.FIRST_CAPACITY < capacities[-1]  # it grew
    assert "summary" in state  # and switched


def recurrent_state(q, k, v, rates, steps, block_decay):
    """The summary-form state after ``steps`` positions."""
    batch, heads, _, dim = q.shape
    state = initial_state(batch, heads, dim, dim, q.dtype, q.device, form="summary")
    for t in range(steps):
        _, state = causal_step(q[:, :, t], k[:, :, t], v[:, :, t], state, rates, block_decay=block_decay)
    return state


def linear_attention(q, k, v, causal, eps=1e-6):
    """Katharopoulos et al. (2020), written directly: phi(q_t) sum_s phi(k_s) v_s^T / phi(q_t) sum_s phi(k_s)."""
    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1
    weights = phi_q @ phi_k.transpose(-1, -2)
    if causal:
        weights = weights.tril()
    return (weights @ v) / (weights.sum(-1, keepdim=True) + eps)


def test_rate_one_is_the_linear_transformer():
    q, k, v = random_qkv(length=19, seed=9)
    assert torch.allclose(bidirectional_attention(q, k, v, 1), linear_attention(q, k, v, False), atol=TOL)
    assert torch.allclose(causal_attention(q, k, v, 1, chunk_size=8), linear_attention(q, k, v, True), atol=TOL)


def test_full_rate_pools_everything_into_one_slot():
    """With r >= length, every query reads the mean value (one slot carries all weight)."""
    q, k, v = random_qkv(length=6, seed=2)
    out = bidirectional_attention(q, k, v, rate=8)
    expected = v.mean(dim=2, keepdim=True).expand_as(out)
    assert torch.allclose(out, expected, atol=1e-6)


def test_padding_invariance_of_a_sentence():
    q, k, v = random_qkv(batch=1, length=5, seed=4)
    alone = bidirectional_attention(q, k, v, 2)
    pad = 4  # the same sentence, left-padded inside a longer batch
    padded = [torch.cat([torch.randn(1, 2, pad, 5, dtype=torch.float64), x], dim=2) for x in (q, k, v)]
    mask = left_padding_mask([5], 5 + pad)
    in_batch = bidirectional_attention(*padded, 2, mask)
    assert torch.allclose(in_batch[:, :, pad:], alone, atol=TOL)


def test_low_precision_inputs_accumulate_in_fp32():
    q, k, v = (x.to(torch.bfloat16) for x in random_qkv(length=64, seed=6))
    out = causal_attention(q, k, v, 4, chunk_size=16)
    assert out.dtype == torch.bfloat16
    reference = causal_attention(*(x.double() for x in (q, k, v)), 4, chunk_size=16)
    assert torch.allclose(out.double(), reference, atol=3e-2)


@pytest.mark.parametrize("rate,chunk_factor", [(1, 4), (3, 2), (2, 1)])
def test_decay_in_every_causal_path_matches_naive(rate, chunk_factor):
    """Complete block j weighs g^(b - j) from block b: chunked (several chunks) and recurrent == naive."""
    q, k, v = random_qkv(heads=2, length=23, seed=14)
    decay = torch.tensor([0.7, 0.95], dtype=torch.float64)
    expected = naive_adamra_attention(q, k, v, [rate, rate], causal=True, block_decay=decay.tolist())
    actual = causal_attention(q, k, v, rate, rate * chunk_factor, block_decay=decay)
    assert torch.allclose(actual, expected, atol=TOL)
    batch, heads, length, dim = q.shape
    state = initial_state(batch, heads, dim, dim, q.dtype, q.device)
    steps = []
    for t in range(length):
        out, state = causal_step(q[:, :, t], k[:, :, t], v[:, :, t], state, torch.tensor([rate, rate]),
                                 block_decay=decay)
        steps.append(out)
    assert torch.allclose(torch.stack(steps, dim=2), expected, atol=TOL)
    # decay 1 is no decay; a smaller decay changes the output
    assert torch.allclose(causal_attention(q, k, v, rate, rate * chunk_factor, block_decay=torch.ones(2)),
                          causal_attention(q, k, v, rate, rate * chunk_factor), atol=TOL)
    assert not torch.allclose(actual, causal_attention(q, k, v, rate, rate * chunk_factor), atol=1e-3)


def test_recurrent_decay_scale_is_folded_in_before_it_underflows():
    """The recurrent state keeps a decayed [S | z] as scale * matrix; a fast decay drives the scale past
    RESCALE_BELOW within a few steps, which folds it into the matrix: still equal to the naive reference."""
    q, k, v = random_qkv(heads=2, length=30, seed=15)
    decay = torch.tensor([1e-3, 0.5], dtype=torch.float64)
    expected = naive_adamra_attention(q, k, v, [1, 2], causal=True, block_decay=decay.tolist())
    batch, heads, length, dim = q.shape
    state = initial_state(batch, heads, dim, dim, q.dtype, q.device, form="summary")
    steps, smallest = [], 1.0
    for t in range(length):
        out, state = causal_step(q[:, :, t], k[:, :, t], v[:, :, t], state, torch.tensor([1, 2]), block_decay=decay)
        steps.append(out)
        smallest = min(smallest, float(state["scale"].min()))
    assert torch.allclose(torch.stack(steps, dim=2), expected, atol=TOL)
    assert RESCALE_BELOW * 1e-3 <= smallest < 1e-9  # it got small, and was folded in before 1e-12 * g


@pytest.mark.parametrize("rate", [1, 3])
def test_source_memory_matches_naive_on_left_padded_batches(rate):
    from adamra_fairseq.ops.source_memory import compress_source, read_memory

    q, k, v = random_qkv(length=6, src_len=13)
    memory_queries = torch.randn(2, 4, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mask = left_padding_mask([13, 7, 1], 13)
    expected = naive_adamra_attention(q, k, v, [rate] * 2, mask, memory_queries=memory_queries)
    k_mean, filled, values = pooled_keys_values(k, v, rate, mask)
    actual = read_memory(q, *compress_source(k_mean, values[..., :-1], memory_queries, filled))
    assert torch.allclose(actual, expected, atol=TOL)
    # a one-token source: every memory row is that token, so every query reads its value
    assert torch.allclose(actual[2], v[2, :, -1:].expand(-1, 6, -1), atol=TOL)


def test_source_memory_read_is_the_softmax_of_its_rows():
    """A memory with one row per source token and sharp, distinct queries is softmax attention over the source."""
    from adamra_fairseq.ops.source_memory import compress_source, read_memory

    q, k, v = random_qkv(batch=1, heads=1, length=4, src_len=3, dim=3)
    k = torch.eye(3, dtype=torch.float64)[None, None] * 3
    memory_queries = torch.eye(3, dtype=torch.float64)[None] * 100  # row l picks source token l
    memory_keys, memory_values = compress_source(k, v, memory_queries)
    assert torch.allclose(memory_keys, k, atol=1e-9) and torch.allclose(memory_values, v, atol=1e-9)
    softmax_attention = torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v
    assert torch.allclose(read_memory(q, memory_keys, memory_values), softmax_attention, atol=1e-9)


@pytest.mark.parametrize("rate", [1, 2])
@pytest.mark.parametrize("max_blocks", [2, 5, 20])
def test_source_blocks_match_naive_and_short_sources_get_softmax_attention(rate, max_blocks):
    from adamra_fairseq.ops.source_memory import read_memory, source_blocks

    q, k, v = random_qkv(length=6, src_len=13)
    mask = left_padding_mask([13, 7, 1], 13)
    expected = naive_adamra_attention(q, k, v, [rate] * 2, mask, max_blocks=max_blocks)
    keys, values, filled = source_blocks(k, v, max_blocks, rate, mask)
    assert keys.size(2) == min(max_blocks, 13)  # the memory never outgrows max_blocks
    assert torch.allclose(read_memory(q, keys, values, filled), expected, atol=TOL)
    if rate == 1 and max_blocks >= 13:  # every source fits: plain softmax attention over its real tokens
        scores = (q @ k.transpose(-1, -2)).masked_fill(mask[:, None, None, :], float("-inf"))
        assert torch.allclose(expected, torch.softmax(scores, dim=-1) @ v, atol=TOL)


@pytest.mark.parametrize("rate,max_blocks", [(1, 4), (2, 3), (1, 20)])
def test_source_blocks_count_from_each_rows_first_real_token_with_pads_anywhere(rate, max_blocks):
    from adamra_fairseq.ops.source_memory import read_memory, source_blocks

    q, k, v = random_qkv(batch=5, length=4, src_len=13, seed=26)
    mask = pads_everywhere(13)
    expected = naive_adamra_attention(q, k, v, [rate] * 2, mask, max_blocks=max_blocks)
    assert torch.allclose(read_memory(q, *source_blocks(k, v, max_blocks, rate, mask)), expected, atol=TOL)


# ----- the dense all-heads form (short inputs) ---------------------------------------------------
MIXED_RATES = [1, 2, 2, 3, 4, 8]  # groups of unequal size, a rate that does not divide the length


def pads_everywhere(total):
    """Left pads, right pads, pads in the middle, a full row and a one-token row."""
    mask = torch.zeros(5, total, dtype=torch.bool)
    mask[0, :4] = True
    mask[1, -5:] = True
    mask[2, 3:6] = True
    mask[4, 1:] = True
    return mask


@pytest.mark.parametrize("name", ["elu", "taylor2", "hedgehog"])
@pytest.mark.parametrize("divide", [True, False])
def test_dense_bidirectional_matches_naive_with_pads_anywhere(name, divide):
    q, k, v = random_qkv(batch=5, heads=len(MIXED_RATES), length=9, src_len=13, seed=21)
    mask = pads_everywhere(13)
    feature_map = FEATURE_MAPS[name]
    expected = naive_adamra_attention(q, k, v, MIXED_RATES, mask, feature_map=feature_map, divide=divide)
    actual = bidirectional_dense(q, k, v, MIXED_RATES, mask, feature_map, divide=divide)
    assert torch.allclose(actual, expected, atol=TOL)
    assert torch.allclose(bidirectional_dense(q, k, v, MIXED_RATES, None, feature_map, divide=divide),
                          naive_adamra_attention(q, k, v, MIXED_RATES, feature_map=feature_map, divide=divide),
                          atol=TOL)


@pytest.mark.parametrize("name", ["elu", "taylor2", "hedgehog"])
@pytest.mark.parametrize("decay", [None, [0.9, 0.5, 0.99, 0.7, 0.8, 0.6]])
@pytest.mark.parametrize("length", [1, 7, 17])
def test_dense_causal_matches_naive_and_the_chunked_op(name, decay, length):
    q, k, v = random_qkv(batch=2, heads=len(MIXED_RATES), length=length, seed=22)
    feature_map = FEATURE_MAPS[name]
    block_decay = None if decay is None else torch.tensor(decay, dtype=torch.float64)
    actual = causal_dense(q, k, v, MIXED_RATES, feature_map, block_decay=block_decay)
    expected = naive_adamra_attention(q, k, v, MIXED_RATES, causal=True, feature_map=feature_map, block_decay=decay)
    assert torch.allclose(actual, expected, atol=TOL)
    chunked = torch.cat([
        causal_attention(q[:, h : h + 1], k[:, h : h + 1], v[:, h : h + 1], rate, chunk_size=24,
                         feature_map=feature_map, block_decay=None if decay is None else block_decay[h : h + 1])
        for h, rate in enumerate(MIXED_RATES)
    ], dim=1)
    assert torch.allclose(actual, chunked, atol=TOL)


def test_dense_forms_with_values_wider_than_the_keys_match_naive():
    """M <= Dv: the weights are normalised before the product (the other order of the same division)."""
    q, k, v = random_qkv(batch=5, heads=len(MIXED_RATES), length=9, dim=16, seed=27)
    mask = pads_everywhere(9)
    hedgehog = FEATURE_MAPS["hedgehog"]
    assert torch.allclose(bidirectional_dense(q, k, v, MIXED_RATES, mask, hedgehog),
                          naive_adamra_attention(q, k, v, MIXED_RATES, mask, feature_map=hedgehog), atol=TOL)
    assert torch.allclose(causal_dense(q, k, v, MIXED_RATES, hedgehog),
                          naive_adamra_attention(q, k, v, MIXED_RATES, causal=True, feature_map=hedgehog), atol=TOL)


def test_dense_causal_never_sees_the_future():
    q, k, v = random_qkv(heads=len(MIXED_RATES), length=12, seed=23)
    out = causal_dense(q, k, v, MIXED_RATES)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 7:] += 10.0
    v2[:, :, 7:] -= 10.0
    assert torch.allclose(causal_dense(q, k2, v2, MIXED_RATES)[:, :, :7], out[:, :, :7], atol=TOL)


def test_dense_forms_pass_the_gradient_check_with_pads_and_decay():
    q, k, v = (x.requires_grad_() for x in random_qkv(batch=3, heads=4, length=6, dim=3, seed=24))
    rates = [1, 2, 3, 3]
    mask = left_padding_mask([6, 4, 1], 6)
    decay = torch.tensor([0.9, 0.6, 0.8, 0.5], dtype=torch.float64, requires_grad=True)
    hedgehog = FEATURE_MAPS["hedgehog"]
    assert torch.autograd.gradcheck(lambda *x: bidirectional_dense(*x, rates, mask, hedgehog), (q, k, v))
    assert torch.autograd.gradcheck(
        lambda q, k, v, g: causal_dense(q, k, v, rates, hedgehog, block_decay=g), (q, k, v, decay)
    )


@pytest.mark.parametrize("name", ["elu", "relu", "hedgehog"])
@pytest.mark.parametrize("divide", [True, False])
def test_dense_backward_by_formula_gives_the_naive_references_gradients(name, divide):
    """The hand-written backward passes (all rate groups at once, pads anywhere, a learned decay) against
    autograd through the naive reference, float64; the formula path must be the one taken."""
    feature_map = FEATURE_MAPS[name]
    q, k, v = (x.requires_grad_() for x in random_qkv(batch=5, heads=len(MIXED_RATES), length=9, src_len=13, seed=28))
    mask = pads_everywhere(13)
    upstream = torch.randn(5, len(MIXED_RATES), 9, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    out = bidirectional_dense(q, k, v, MIXED_RATES, mask, feature_map, divide=divide)
    assert type(out.grad_fn).__name__ == "_BidirectionalDenseBackward"
    actual = torch.autograd.grad(out, (q, k, v), upstream)
    expected_out = naive_adamra_attention(q, k, v, MIXED_RATES, mask, feature_map=feature_map, divide=divide)
    expected = torch.autograd.grad(expected_out, (q, k, v), upstream)
    for got, want in zip(actual, expected):
        assert torch.allclose(got, want, atol=1e-9)

    k_causal, v_causal = k[:, :, :9], v[:, :, :9]
    decay = torch.tensor([0.9, 0.5, 0.99, 0.7, 0.8, 0.6], dtype=torch.float64, requires_grad=True)
    out = causal_dense(q, k_causal, v_causal, MIXED_RATES, feature_map, divide=divide, block_decay=decay)
    assert type(out.grad_fn).__name__ == "_CausalDenseBackward"
    actual = torch.autograd.grad(out, (q, k, v, decay), upstream)
    expected_out = naive_adamra_attention(q, k_causal, v_causal, MIXED_RATES, causal=True, feature_map=feature_map,
                                          divide=divide, block_decay=decay.tolist())
    expected = torch.autograd.grad(expected_out, (q, k, v), upstream)
    for got, want in zip(actual, expected):
        assert torch.allclose(got, want, atol=1e-9)
    # the reference takes the decay as numbers: its gradient against autograd through the same forward pass
    running, weight = dense.causal_matrices(9, MIXED_RATES, torch.float64, q.device, decay)
    by_autograd = dense._causal_forward(q, k_causal, v_causal, running, weight, feature_map, 1e-6, divide)[0]
    assert by_autograd.grad_fn is not None and "Dense" not in type(by_autograd.grad_fn).__name__
    assert torch.allclose(actual[3], torch.autograd.grad(by_autograd, decay, upstream)[0], atol=1e-9)


def test_dense_backward_by_formula_returns_gradients_in_the_inputs_dtype():
    """bfloat16 inputs are computed in float32; gradients come back in bfloat16, close to float32's."""
    q, k, v = random_qkv(batch=2, heads=4, length=8, dim=6, seed=29)
    hedgehog = FEATURE_MAPS["hedgehog"]
    for op in (lambda *x: bidirectional_dense(*x, [1, 2, 4, 4], None, hedgehog),
               lambda *x: causal_dense(*x, [1, 2, 4, 4], hedgehog)):
        wide = [x.float().requires_grad_() for x in (q, k, v)]
        narrow = [x.bfloat16().requires_grad_() for x in (q, k, v)]
        op(*wide).sum().backward()
        out = op(*narrow)
        assert out.dtype == torch.bfloat16
        out.float().sum().backward()
        for a, b in zip(narrow, wide):
            assert a.grad.dtype == torch.bfloat16
            assert torch.allclose(a.grad.float(), b.grad, atol=2e-2, rtol=2e-2)


def test_dense_output_is_laid_out_time_major():
    """The module turns ``(B, H, T, D)`` into ``(T, B, H, D)`` for the output projection: that must copy nothing."""
    q, k, v = random_qkv(batch=2, heads=4, length=8, dim=6, seed=30)
    for out in (bidirectional_dense(q, k, v, [1, 2, 4, 4]), causal_dense(q, k, v, [1, 2, 4, 4])):
        assert out.permute(2, 0, 1, 3).is_contiguous()


@pytest.mark.parametrize("padded", [True, False])
@pytest.mark.parametrize("form", ["state", "chunked"])
@pytest.mark.parametrize("name", ["hedgehog", "elu", "taylor2"])
def test_long_input_forms_can_write_the_packed_gradient_over_the_packed_input(form, name, padded):
    """With ``reuse_packed`` the state form and the chunked causal op return the gradient of the stacked projection
    in that projection's own memory (checked by address), with the same numbers as with a buffer of its own, for
    feature maps with and without a formula backward; a leaf tensor (the caller's) is never overwritten, and a
    second backward pass through the same graph is refused instead of reading overwritten inputs."""
    heads, length, batch, rates = 4, 13, 3, [1, 2, 4, 4]
    widths = (heads * 5, heads * 5, heads * 6)
    generator = torch.Generator().manual_seed(7)
    weight = torch.randn(sum(widths), 8, dtype=torch.float64, generator=generator, requires_grad=True)
    x = torch.randn(length, batch, 8, dtype=torch.float64, generator=generator, requires_grad=True)
    upstream = torch.randn(batch, heads, length, 6, dtype=torch.float64, generator=generator)
    feature_map = FEATURE_MAPS[name]
    mask = left_padding_mask([13, 9, 4], length) if padded else None  # without pads rate 1 reads k, v in place

    def op(packed, reuse, upstream_of_packed=None):
        q, k, v = time_major_heads(packed, widths, heads)
        if upstream_of_packed is not None:
            packed.register_hook(lambda grad: upstream_of_packed.append((grad.data_ptr(), packed.data_ptr())))
        if form == "state":
            return bidirectional_state(q, k, v, rates, mask, feature_map, packed=packed, reuse_packed=reuse)
        decay = torch.tensor([0.9, 0.6, 0.8, 0.5], dtype=torch.float64)
        return causal.causal_heads(q, k, v, rates, 4, feature_map, block_decay=decay, packed=packed,
                                   reuse_packed=reuse)

    seen = []
    reused = torch.autograd.grad(op(x @ weight.t(), True, seen), (x, weight), upstream)
    own = torch.autograd.grad(op(x @ weight.t(), False), (x, weight), upstream)
    expected_reuse = name != "taylor2" or form == "state"  # the chunked op has no formula backward for taylor2
    assert (seen[0][0] == seen[0][1]) == expected_reuse
    for got, want in zip(reused, own):
        assert torch.equal(got, want)

    leaf = (x @ weight.t()).detach().requires_grad_()
    kept = leaf.detach().clone()
    torch.autograd.grad(op(leaf, True), leaf, upstream)
    assert torch.equal(leaf, kept)

    if expected_reuse:
        out = op(x @ weight.t(), True)
        out.backward(upstream, retain_graph=True)
        with pytest.raises(RuntimeError, match="backward pass can run only once"):
            out.backward(upstream)


def test_only_a_contiguous_intermediate_in_the_accumulation_dtype_is_reused_for_its_gradient():
    weight = torch.randn(6, 4, requires_grad=True)
    made = torch.randn(3, 2, 4) @ weight.t()  # what the module's stacked projection is
    assert reusable_for_gradient(made, torch.float32)
    assert not reusable_for_gradient(None, torch.float32)
    assert not reusable_for_gradient(made, torch.float64)  # another dtype: the gradient needs its own buffer
    assert not reusable_for_gradient(made.transpose(0, 1), torch.float32)  # not contiguous
    assert not reusable_for_gradient(made.detach().requires_grad_(), torch.float32)  # a leaf is the caller's
    half = torch.randn(3, 2, 4).bfloat16() @ weight.bfloat16().t()  # bf16 training: gradients accumulate in fp32
    assert half.grad_fn is not None and not reusable_for_gradient(half, torch.float32)


def test_dense_form_is_chosen_for_short_inputs_only():
    assert dense_is_cheaper(30, 31) and dense_is_cheaper(256, 1)
    assert not dense_is_cheaper(1024, 30) and not dense_is_cheaper(1, 4096)
    # causal: also only for batches small enough that the (B, H, T, T) weights cost less than the chunked scan
    assert causal_dense_is_cheaper(136, 30) and causal_dense_is_cheaper(32, 128) and causal_dense_is_cheaper(1, 256)
    assert not causal_dense_is_cheaper(16, 256) and not causal_dense_is_cheaper(21, 192)
    assert not causal_dense_is_cheaper(1, 257)
    assert rate_groups([1, 1, 2, 4, 4, 1]) == [(1, 2), (2, 1), (4, 2), (1, 1)]


@pytest.mark.parametrize("form", ["bidirectional", "causal", "state", "chunked"])
def test_all_heads_forms_take_q_k_v_packed_in_one_tensor(form):
    """Given the time-major tensor that q, k and v are head views of (the module's stacked projection), the
    backward pass returns one gradient for it, equal to the three gradients of separate inputs, and autograd
    has no split to undo (which would concatenate three gradients)."""
    heads, length, batch, rates = 4, 7, 3, [1, 2, 3, 3]
    widths = (heads * 5, heads * 5, heads * 6)
    packed = torch.randn(length, batch, sum(widths), dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(batch, heads, length, 6, dtype=torch.float64)
    hedgehog = FEATURE_MAPS["hedgehog"]
    mask = left_padding_mask([7, 5, 2], length)

    def op(q, k, v, packed=None):
        if form == "causal":
            decay = torch.tensor([0.9, 0.6, 0.8, 0.5], dtype=torch.float64)
            return causal_dense(q, k, v, rates, hedgehog, block_decay=decay, packed=packed)
        if form == "state":
            return bidirectional_state(q, k, v, rates, mask, hedgehog, packed=packed)
        if form == "chunked":
            decay = torch.tensor([0.9, 0.6, 0.8, 0.5], dtype=torch.float64)
            return causal.causal_heads(q, k, v, rates, 6, hedgehog, block_decay=decay, packed=packed)
        return bidirectional_dense(q, k, v, rates, mask, hedgehog, packed=packed)

    out = op(*time_major_heads(packed, widths, heads), packed=packed)
    assert [type(f).__name__ for f, _ in out.grad_fn.next_functions if f is not None] == ["AccumulateGrad"]
    (grad,) = torch.autograd.grad(out, packed, upstream)
    separate = [view.detach().clone().requires_grad_() for view in time_major_heads(packed, widths, heads)]
    expected = torch.autograd.grad(op(*separate), separate, upstream)
    for got, want in zip(time_major_heads(grad, widths, heads), expected):
        assert torch.allclose(got, want, atol=1e-12)
    with pytest.raises(ValueError, match="head views are q, k and v"):
        op(*time_major_heads(packed, widths, heads), packed=packed.detach().clone().requires_grad_())
