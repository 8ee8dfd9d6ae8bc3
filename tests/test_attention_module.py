"""MultiResolutionAttention (the fairseq module) against the naive reference and its own step-by-step path."""

import math

import pytest
import torch

from adamra_fairseq.modules import MultiResolutionAttention
from adamra_fairseq.modules.options import AdaMRAOptions
from adamra_fairseq.modules.query_key_transform import QueryKeyTransform
from adamra_fairseq.ops import dense
from adamra_fairseq.ops.feature_maps import FEATURE_MAPS
from adamra_fairseq.ops.naive import naive_adamra_attention

EMBED, HEADS = 32, 8


@pytest.fixture(autouse=True, params=["dense", "per-group"])
def attention_form(request, monkeypatch):
    """Every module test runs twice: with the dense all-heads form that short inputs take, and with the
    linear per-group ops that long inputs take (forced here by a dense limit of 0 tokens)."""
    if request.param == "per-group":
        monkeypatch.setattr(dense, "DENSE_MAX_LENGTH", 0)
    return request.param


def options(rates=(1, 2), routing="soft", feature_map="elu", chunk=4, **extra):
    return AdaMRAOptions(rates=rates, routing=routing, balance_loss=0.0, feature_map=feature_map,
                         places=("encoder", "decoder", "cross"), chunk_size=chunk, eps=1e-6, **extra)


def randomise_learned_parameters(module):
    """Gate, temperatures, learned feature projections and head-norm gains away from their initial values."""
    with torch.no_grad():
        if module.gate.proj is not None:  # a non-uniform gate, so that routing matters
            module.gate.proj.weight.normal_(std=0.5)
            module.gate.proj.bias.normal_()
        for name, parameter in module.named_parameters():
            if name.startswith(("query_key.", "head_norm.", "decay_logit", "memory_queries")):
                parameter.add_(torch.randn_like(parameter) * 0.3)


def make_module(seed=0, causal_decay=False, **kwargs):
    torch.manual_seed(seed)
    module = MultiResolutionAttention(EMBED, HEADS, options(**kwargs), self_attention=True,
                                      causal_decay=causal_decay).double()
    randomise_learned_parameters(module)
    return module.eval()


def transformed_query_key(module, q, k):
    """``--adamra-qk-norm`` and the learned feature projection, written out head by head."""
    opts, transform = module.options, module.query_key
    if opts.qk_norm == "scale":
        q = q / math.sqrt(module.head_dim)
    if opts.qk_norm == "l2":
        root_tau = transform.log_temperature.exp().sqrt()[None, :, None, None]
        q = q / q.norm(dim=-1, keepdim=True) * root_tau
        k = k / k.norm(dim=-1, keepdim=True) * root_tau
    if transform.weight is None:
        return q, k

    def project(x):
        heads = [x[:, h] @ transform.weight[h] for h in range(x.size(1))]
        if transform.bias is not None:
            heads = [y + transform.bias[h] for h, y in enumerate(heads)]
        return torch.stack(heads, dim=1)

    return project(q), project(k)


def reference_forward(module, query, key, mask=None, causal=False):
    """Projections, q/k transform, naive attention per head, head norm, the gate written out, out_proj."""
    def heads(x):
        return x.view(x.size(0), x.size(1), HEADS, -1).permute(1, 2, 0, 3)

    q, k, v = heads(module.q_proj(query)), heads(module.k_proj(key)), heads(module.v_proj(key))
    q, k = transformed_query_key(module, q, k)
    rates = module.options.head_rates(HEADS)
    divide = module.options.normaliser in ("denominator", "both")
    decay = module.block_decay() if causal and module.decay_logit is not None else None
    out = naive_adamra_attention(q, k, v, rates, mask, causal=causal, feature_map=module.feature_map, divide=divide,
                                 block_decay=None if decay is None else decay.tolist(),
                                 memory_queries=module.memory_queries, max_blocks=module.options.blocks or None)
    if module.options.normaliser in ("norm", "both"):
        gain = module.head_norm.gain[None, :, None, :]
        out = out / torch.sqrt(out.square().mean(dim=-1, keepdim=True) + 1e-6) * gain
    out = out.permute(2, 0, 1, 3)  # (T, B, H, D)
    if module.gate.proj is None:  # one rate: no gate
        return module.out_proj(out.reshape(query.size(0), query.size(1), EMBED))
    gate = torch.softmax(module.gate.proj(query), dim=-1)  # (T, B, R)
    num_rates = len(module.options.rates)
    if module.options.routing == "soft":
        per_rate = num_rates * gate
    else:
        per_rate = gate * torch.nn.functional.one_hot(gate.argmax(-1), num_rates)
    scale = per_rate.repeat_interleave(HEADS // num_rates, dim=-1)
    return module.out_proj((out * scale.unsqueeze(-1)).reshape(query.size(0), query.size(1), EMBED))


def future_mask(length):
    return torch.triu(torch.full((length, length), float("-inf"), dtype=torch.float64), 1)


@pytest.mark.parametrize("routing", ["soft", "top1"])
@pytest.mark.parametrize("rates", [(1, 2), (2, 3), (1, 2, 4, 8)])
def test_encoder_self_attention_matches_reference(routing, rates):
    module = make_module(rates=rates, routing=routing, chunk=24)
    x = torch.randn(9, 3, EMBED, dtype=torch.float64)
    mask = torch.zeros(3, 9, dtype=torch.bool)
    mask[1, :3] = True
    mask[2, :8] = True
    out, weights = module(x, x, x, key_padding_mask=mask)
    assert weights is None
    assert torch.allclose(out, reference_forward(module, x, x, mask), atol=1e-10)


@pytest.mark.parametrize("routing", ["soft", "top1"])
@pytest.mark.parametrize("feature_map", ["elu", "dpfp1"])
def test_decoder_self_attention_matches_causal_reference(routing, feature_map):
    module = make_module(rates=(2, 3), routing=routing, chunk=6, feature_map=feature_map)
    x = torch.randn(11, 2, EMBED, dtype=torch.float64)
    out, _ = module(x, x, x, attn_mask=future_mask(11))
    assert torch.allclose(out, reference_forward(module, x, x, causal=True), atol=1e-10)


@pytest.mark.parametrize("layout", ["pads at the end", "pads in front"])
def test_padded_decoder_self_attention_matches_causal_reference_at_real_positions(layout):
    """fairseq pads targets at the end (used as they are); other layouts are moved to the end and back."""
    module = make_module(rates=(1, 2, 4, 8), chunk=8, feature_map="hedgehog", causal_decay=True)
    x = torch.randn(10, 3, EMBED, dtype=torch.float64)
    lengths = torch.tensor([10, 6, 1])
    positions = torch.arange(10)[None, :]
    mask = positions >= lengths[:, None] if layout == "pads at the end" else positions < (10 - lengths)[:, None]
    out, _ = module(x, x, x, key_padding_mask=mask, attn_mask=future_mask(10))
    expected = reference_forward(module, x, x, mask, causal=True)
    real = ~mask.t()  # (T, B)
    assert torch.allclose(out[real], expected[real], atol=1e-10)


def test_decoder_self_attention_rejects_other_masks():
    module = make_module()
    x = torch.randn(5, 2, EMBED, dtype=torch.float64)
    bad = torch.zeros(5, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="future mask"):
        module(x, x, x, attn_mask=bad)


def test_single_rate_module_is_linear_attention_with_projections():
    """One rate 1: no gate at all, and the module equals linear attention between projections."""
    module = make_module(rates=(1,))
    assert module.gate.proj is None
    x = torch.randn(7, 2, EMBED, dtype=torch.float64)
    out, _ = module(x, x, x)
    assert torch.allclose(out, reference_forward_no_gate(module, x), atol=1e-10)


def reference_forward_no_gate(module, x):
    def heads(y):
        return y.view(y.size(0), y.size(1), HEADS, -1).permute(1, 2, 0, 3)

    phi = lambda y: torch.nn.functional.elu(y) + 1  # noqa: E731
    q, k, v = phi(heads(module.q_proj(x))), phi(heads(module.k_proj(x))), heads(module.v_proj(x))
    out = (q @ (k.transpose(-1, -2) @ v)) / (q @ k.sum(2, keepdim=True).transpose(-1, -2) + 1e-6)
    return module.out_proj(out.permute(2, 0, 1, 3).reshape(x.size(0), x.size(1), EMBED))


def make_cross(seed=0, **kwargs):
    torch.manual_seed(seed)
    kwargs.setdefault("rates", (1, 4))
    module = MultiResolutionAttention(EMBED, HEADS, options(**kwargs).for_cross_attention(), kdim=8, vdim=8,
                                      encoder_decoder_attention=True).double().eval()
    randomise_learned_parameters(module)
    return module


@pytest.mark.parametrize("settings", [dict(), dict(memory=5, qk_norm="scale", normaliser="norm"), dict(blocks=3)])
def test_cross_attention_padding_invariance(settings):
    module = make_cross(**settings)
    source = torch.randn(6, 1, 8, dtype=torch.float64)
    query = torch.randn(4, 1, EMBED, dtype=torch.float64)
    alone, _ = module(query, source, source)
    longer = torch.randn(10, 1, 8, dtype=torch.float64)
    batch_source = torch.cat([torch.cat([torch.randn(4, 1, 8, dtype=torch.float64), source]), longer], dim=1)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0, :4] = True  # left padding of the short sentence
    batch_query = torch.cat([query, torch.randn(4, 1, EMBED, dtype=torch.float64)], dim=1)
    in_batch, _ = module(batch_query, batch_source, batch_source, key_padding_mask=mask)
    assert torch.allclose(in_batch[:, :1], alone, atol=1e-10)


# (qk_norm, feature_map, feature_dim, normaliser): the quality options, in combinations that cover each value
VARIANTS = [
    ("l2", "hedgehog", 0, "both"),
    ("scale", "t2r", 3, "norm"),
    ("none", "taylor2", 0, "denominator"),
    ("l2", "elu", 0, "norm"),
    ("scale", "hedgehog", 6, "denominator"),
    ("scale", "taylor2", 3, "denominator"),  # taylor2 after a learned projection to 3
]


def variant(qk_norm, feature_map, feature_dim, normaliser):
    return dict(qk_norm=qk_norm, feature_map=feature_map, feature_dim=feature_dim, normaliser=normaliser)


@pytest.mark.parametrize("settings", VARIANTS)
def test_quality_options_match_the_written_out_reference(settings):
    module = make_module(rates=(1, 2, 4, 8), chunk=8, **variant(*settings))
    x = torch.randn(9, 4, EMBED, dtype=torch.float64)  # 36 tokens >= EMBED: learned projections are folded
    mask = torch.zeros(4, 9, dtype=torch.bool)
    mask[1, :3] = True
    out, _ = module(x, x, x, key_padding_mask=mask)
    assert torch.allclose(out, reference_forward(module, x, x, mask), atol=1e-10)
    causal, _ = module(x, x, x, attn_mask=future_mask(9))
    assert torch.allclose(causal, reference_forward(module, x, x, causal=True), atol=1e-10)


@pytest.mark.parametrize("settings", VARIANTS)
def test_quality_options_incremental_equals_parallel(settings):
    module = make_module(rates=(1, 3), chunk=6, **variant(*settings))
    x = torch.randn(8, 4, EMBED, dtype=torch.float64)  # parallel: folded projections; steps: separate
    parallel, _ = module(x, x, x, attn_mask=future_mask(8))
    state = {}
    steps = [module(x[t : t + 1], x[t : t + 1], x[t : t + 1], incremental_state=state)[0] for t in range(8)]
    assert torch.allclose(torch.cat(steps), parallel, atol=1e-10)


def check_cross_cached_equals_parallel_and_reference(module):
    """A padded batch through cross-attention: parallel == written-out reference, cached steps == parallel.
    Returns the decoding state."""
    source = torch.randn(7, 2, 8, dtype=torch.float64)
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[1, :3] = True
    queries = torch.randn(4, 2, EMBED, dtype=torch.float64)
    full, _ = module(queries, source, source, key_padding_mask=mask)
    assert torch.allclose(full, reference_forward(module, queries, source, mask), atol=1e-10)
    state = {}
    steps = [module(queries[t : t + 1], source if t == 0 else None, source if t == 0 else None,
                    key_padding_mask=mask, incremental_state=state, static_kv=True)[0] for t in range(4)]
    assert torch.allclose(torch.cat(steps), full, atol=1e-10)
    return state


@pytest.mark.parametrize("settings", VARIANTS)
def test_cross_attention_quality_options_cached_equals_parallel_and_reference(settings):
    check_cross_cached_equals_parallel_and_reference(make_cross(**variant(*settings)))


@pytest.mark.parametrize("settings", VARIANTS)
def test_folded_query_key_projection_equals_projection_then_transform(settings):
    module = make_module(**variant(*settings))
    x = torch.randn(5, 2, EMBED, dtype=torch.float64)
    transform = module.query_key
    for linear, is_query in ((module.q_proj, True), (module.k_proj, False)):
        folded = transform.fused_linear(linear, is_query)
        if settings[0] == "l2":  # not linear: nothing to fold
            assert folded is None
            continue
        heads = module._heads(linear(x))
        separate = transform.queries(heads) if is_query else transform.keys(heads)
        assert torch.allclose(module._heads(torch.nn.functional.linear(x, *folded)), separate, atol=1e-12)


@pytest.mark.parametrize("settings", VARIANTS)
def test_stacked_self_projection_equals_three_projections_and_its_cache_follows_the_parameters(settings):
    """One tensor as query, key and value takes one product by the stacked q/k/v map (kept between calls
    without gradients): the same output as separate tensors, which take one product each."""
    module = make_module(**variant(*settings))
    x = torch.randn(300, 1, EMBED, dtype=torch.float64)  # more tokens than features: folding pays with gradients
    separate = module(x, x.clone(), x.clone())[0]
    assert torch.allclose(module(x, x, x)[0], separate, atol=1e-12)
    short = x[:3]  # fewer tokens than features: folded only without gradients
    with torch.no_grad():
        before = module(short, short.clone(), short.clone())[0]
        assert torch.allclose(module(short, short, short)[0], before, atol=1e-12)
        if settings[0] != "l2":
            assert module._folded_cache is not None
        module.k_proj.weight.add_(torch.randn_like(module.k_proj.weight))  # in place, as an optimizer step
        changed = module(short, short, short)[0]
        assert torch.allclose(changed, module(short, short.clone(), short.clone())[0], atol=1e-12)
    assert not torch.allclose(changed, before, atol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
def test_stacked_self_projection_gives_the_gradients_of_three_projections(causal):
    """With gradients, the stacked projection's output goes to the dense forms in one piece (their backward
    pass returns one gradient for it): the input's and the parameters' gradients equal those of separate
    query, key and value tensors, which take one product each."""
    module = make_module(rates=(1, 2, 4, 8), chunk=8, causal_decay=causal,
                         **variant("scale", "hedgehog", 6, "denominator"))
    x = torch.randn(12, 4, EMBED, dtype=torch.float64)  # 48 tokens >= EMBED: the stacked map
    mask = torch.zeros(4, 12, dtype=torch.bool)
    mask[1, :3] = True
    upstream = torch.randn(12, 4, EMBED, dtype=torch.float64)
    params = [p for p in module.parameters() if p.requires_grad]
    gradients = []
    for stacked in (True, False):
        query = x.detach().requires_grad_()
        key, value = (query, query) if stacked else (query.clone(), query.clone())
        out, _ = module(query, key, value, key_padding_mask=None if causal else mask,
                        attn_mask=future_mask(12) if causal else None)
        gradients.append(torch.autograd.grad(out, [query, *params], upstream, allow_unused=True))
    for stacked, separate in zip(*gradients):
        assert (stacked is None) == (separate is None)
        if stacked is not None:
            assert torch.allclose(stacked, separate, atol=1e-10)


@pytest.mark.parametrize("causal", [False, True])
def test_long_self_attention_writes_the_projections_gradient_over_it_with_the_same_gradients(causal, monkeypatch):
    """Above the dense limit the module hands its stacked projection to the state form or the chunked causal op
    for reuse (the projection's gradient then arrives in the projection's own memory); the input's and the
    parameters' gradients equal those with a buffer of its own (``reuse_projection_memory = False``)."""
    module = make_module(rates=(1, 2, 4, 8), chunk=8, causal_decay=causal,
                         **variant("scale", "hedgehog", 6, "denominator"))
    length = dense.DENSE_MAX_LENGTH + 20
    x = torch.randn(length, 2, EMBED, dtype=torch.float64)
    upstream = torch.randn(length, 2, EMBED, dtype=torch.float64)
    params = [p for p in module.parameters() if p.requires_grad]
    linear = torch.nn.functional.linear
    gradients, shared = [], []

    def watched_linear(*args):  # sees the stacked projection and where its gradient lands
        out = linear(*args)
        if out.size(-1) > EMBED:
            out.register_hook(lambda grad: shared.append(grad.data_ptr() == out.data_ptr()))
        return out

    monkeypatch.setattr(torch.nn.functional, "linear", watched_linear)
    for reuse in (True, False):
        monkeypatch.setattr(module, "reuse_projection_memory", reuse)
        query = x.detach().requires_grad_()
        out, _ = module(query, query, query, attn_mask=future_mask(length) if causal else None)
        gradients.append(torch.autograd.grad(out, [query, *params], upstream, allow_unused=True))
    assert shared == [True, False]
    for reused, own in zip(*gradients):
        assert (reused is None) == (own is None)
        if reused is not None:
            assert torch.equal(reused, own)


def test_block_decay_is_kept_without_gradients_until_the_parameter_changes():
    module = make_module(rates=(1, 2, 4, 8), causal_decay=True)
    fresh = module.block_decay()  # with gradients: computed at every call, differentiable
    assert fresh.requires_grad and module.block_decay() is not fresh
    with torch.no_grad():
        kept = module.block_decay()
        assert torch.equal(kept, fresh) and module.block_decay() is kept
        module.decay_logit.add_(1.0)  # in place, as an optimizer step
        changed = module.block_decay()
    assert torch.allclose(changed, module.block_decay()) and not torch.allclose(changed, kept)


def test_taylor2_with_a_width_projects_first_and_keeps_dot_products_on_average():
    module = make_module(feature_map="taylor2", feature_dim=3)
    assert module.query_key.weight.shape == (HEADS, EMBED // HEADS, 3)
    assert module.feature_dim == 1 + 3 + 3 * 4 // 2  # taylor2 of 3-wide vectors
    assert make_module(feature_map="taylor2").query_key.weight is None  # no width: no projection
    wide = QueryKeyTransform(2, 16, feature_map="taylor2", feature_dim=8192).weight
    gram = wide @ wide.transpose(1, 2)  # (H, D, D): E[W W^T] = I
    assert torch.allclose(gram, torch.eye(16).expand_as(gram), atol=0.1)


def test_feature_init_scale_multiplies_the_projection_at_the_start():
    head_dim = EMBED // HEADS
    for scale in (1.0, 2.5):
        module = MultiResolutionAttention(EMBED, HEADS, options(feature_map="hedgehog", feature_init_scale=scale),
                                          self_attention=True)
        assert torch.equal(module.query_key.weight, scale * torch.eye(head_dim).expand(HEADS, -1, -1))
    torch.manual_seed(0)
    t2r = QueryKeyTransform(2, 16, feature_map="t2r", feature_dim=8192, init_scale=3.0).weight
    assert abs(t2r.std().item() - 3.0 / 4) < 0.01  # x W keeps the scale of x, times 3
    narrowed = QueryKeyTransform(2, 16, feature_map="taylor2", feature_dim=8192, init_scale=3.0).weight
    gram = narrowed @ narrowed.transpose(1, 2)
    assert torch.allclose(gram, 9 * torch.eye(16).expand_as(gram), atol=0.9)


def test_feature_init_scale_makes_the_initial_hedgehog_kernel_less_flat():
    """Relative spread of one query's kernel weights over random keys at D = 64, entries of spread 0.7 (as
    at the start of training): nearly flat with W = I, several times less flat with W = 2 I."""
    torch.manual_seed(0)
    q, k = 0.7 * torch.randn(500, 64), 0.7 * torch.randn(200, 64)

    def spread(scale):
        weights = FEATURE_MAPS["hedgehog"](scale * q) @ FEATURE_MAPS["hedgehog"](scale * k).T
        return (weights.std(dim=1) / weights.mean(dim=1)).mean().item()

    assert spread(1.0) < 0.1 and spread(2.0) > 3 * spread(1.0)


def test_learned_decay_matches_reference_and_incremental_equals_parallel():
    module = make_module(rates=(1, 2, 4, 8), chunk=8, causal_decay=True, feature_map="hedgehog")
    rates = torch.tensor(module.options.head_rates(HEADS), dtype=torch.float64)
    gamma = torch.sigmoid(module.decay_logit)
    assert torch.allclose(module.block_decay(), gamma ** rates)
    x = torch.randn(19, 2, EMBED, dtype=torch.float64)
    parallel, _ = module(x, x, x, attn_mask=future_mask(19))
    assert torch.allclose(parallel, reference_forward(module, x, x, causal=True), atol=1e-10)
    state = {}
    steps = [module(x[t : t + 1], x[t : t + 1], x[t : t + 1], incremental_state=state)[0] for t in range(19)]
    assert torch.allclose(torch.cat(steps), parallel, atol=1e-10)


def test_recomputed_causal_op_gives_the_same_output_and_gradients_and_keeps_less():
    """``--adamra-recompute causal``: same numbers as keeping the intermediates, fewer saved tensors."""
    x = torch.randn(21, 2, EMBED, dtype=torch.float64)
    padding = torch.zeros(2, 21, dtype=torch.bool)
    padding[1, 15:] = True  # fairseq's targets: trailing pads
    results = {}
    for recompute in ("none", "causal"):
        module = make_module(seed=3, rates=(1, 2, 4, 8), chunk=8, causal_decay=True, feature_map="hedgehog",
                             recompute=recompute).train()
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            out, _ = module(x, x, x, key_padding_mask=padding, attn_mask=future_mask(21))
        out.pow(2).sum().backward()
        grads = {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}
        results[recompute] = out, grads, sum(t.numel() for t in saved)
    (out, grads, kept), (out_r, grads_r, kept_r) = results["none"], results["causal"]
    assert torch.allclose(out_r, out, atol=1e-12)
    assert grads.keys() == grads_r.keys() and "decay_logit" in grads
    for name in grads:
        assert torch.allclose(grads_r[name], grads[name], atol=1e-10), name
    if dense.DENSE_MAX_LENGTH < 21:  # the chunked op ran (the dense form of short inputs is not recomputed)
        assert kept_r < kept
    else:
        assert kept_r == kept


def test_cross_attention_overrides_apply_to_cross_attention_only():
    settings = options(rates=(1, 2, 4, 8), cross={"rates": (1,), "feature_map": "hedgehog", "qk_norm": "l2"})
    self_attention = MultiResolutionAttention(EMBED, HEADS, settings, self_attention=True)
    cross_attention = MultiResolutionAttention(EMBED, HEADS, settings.for_cross_attention(), kdim=8, vdim=8,
                                               encoder_decoder_attention=True)
    assert self_attention.rates == (1, 2, 4, 8) and self_attention.query_key.weight is None
    assert cross_attention.rates == (1,) and cross_attention.gate.proj is None
    assert cross_attention.feature_dim == 2 * (EMBED // HEADS)
    assert cross_attention.query_key.log_temperature is not None


def test_cross_attention_incremental_caches_and_reorders():
    module = make_cross()
    source = torch.randn(7, 3, 8, dtype=torch.float64)
    mask = torch.zeros(3, 7, dtype=torch.bool)
    mask[2, :2] = True
    queries = torch.randn(5, 3, EMBED, dtype=torch.float64)
    full, _ = module(queries, source, source, key_padding_mask=mask)

    state = {}
    out0, _ = module(queries[:1], source, source, key_padding_mask=mask, incremental_state=state, static_kv=True)
    assert torch.allclose(out0, full[:1], atol=1e-10)
    # rate 1 (7 blocks) reads the 4 x 5 summary, rate 4 (2 blocks) the blocks: 2 x (4 + 5) < 4 x 5
    assert set(module._get_input_buffer(state)) == {"summary0", "keys1", "values1", "filled1"}
    # later steps must not look at the keys again
    out1, _ = module(queries[1:2], None, None, key_padding_mask=mask, incremental_state=state, static_kv=True)
    assert torch.allclose(out1, full[1:2], atol=1e-10)
    # a reorder that keeps the batch size stays within each sentence's beam (fairseq's contract): no copy
    cached = dict(module._get_input_buffer(state))
    module.reorder_incremental_state(state, torch.tensor([0, 0, 2]))
    assert all(module._get_input_buffer(state)[name] is tensor for name, tensor in cached.items())
    # beam reorder that also shrinks the batch: rows 2 and 0 survive
    new_order = torch.tensor([2, 0])
    module.reorder_incremental_state(state, new_order)
    out2, _ = module(queries[2:3, new_order], None, None, incremental_state=state, static_kv=True)
    assert torch.allclose(out2, full[2:3, new_order], atol=1e-10)


@pytest.mark.parametrize("gradients", [True, False])
@pytest.mark.parametrize("feature_map", ["elu", "dpfp2"])
def test_self_attention_incremental_matches_parallel_with_reorder(feature_map, gradients):
    module = make_module(rates=(1, 3), chunk=6, feature_map=feature_map)
    x = torch.randn(10, 4, EMBED, dtype=torch.float64)
    parallel, _ = module(x, x, x, attn_mask=future_mask(10))
    with torch.set_grad_enabled(gradients):  # without gradients a summary-form state is written in place
        state = {}
        rows = torch.arange(4)
        for t in range(10):
            if t == 2:  # the identity (greedy search) keeps the state as it is
                kept = dict(module._get_input_buffer(state))
                module.reorder_incremental_state(state, torch.arange(4))
                assert all(module._get_input_buffer(state)[name] is tensor for name, tensor in kept.items())
            # beam reorders with duplication at 4, of the same size at 5 (without gradients into the buffers
            # that the reorder at 4 left behind), a finished sentence leaving the batch at 7
            orders = {4: [1, 1, 3, 0], 5: [0, 1, 3, 2], 6: [2, 3, 1, 0], 7: [0, 2, 3]}
            if t in orders:
                order = torch.tensor(orders[t])
                module.reorder_incremental_state(state, order)
                rows = rows[order]
            step, _ = module(x[t : t + 1, rows], x[t : t + 1, rows], x[t : t + 1, rows], incremental_state=state)
            # row i now carries the history of sentence rows[i] and reads its input: the parallel output
            assert torch.allclose(step, parallel[t : t + 1, rows], atol=1e-10), t


def test_recurrent_state_size_is_bounded_and_constant_once_it_is_a_summary():
    """The decoding state grows by one pooled block per r tokens while that is smaller than the per-head
    [S | z], then switches to [S | z] and stays at that size for the rest of the output."""
    module = make_module(rates=(1, 2))
    state = {}
    sizes = []
    x = torch.randn(1000, 1, EMBED, dtype=torch.float64)
    for t in range(1000):
        module(x[t : t + 1], x[t : t + 1], x[t : t + 1], incremental_state=state)
        sizes.append(sum(tensor.numel() for tensor in module._get_input_buffer(state).values()))
    heads, head_dim = module.num_heads, module.head_dim
    summary_size = heads * (module.feature_dim * (head_dim + 1) + 1 + head_dim + head_dim + 1)
    assert max(sizes) <= summary_size + heads * (module.feature_dim + head_dim + 1)
    switch = sizes.index(summary_size)
    assert sizes[:switch] == sorted(sizes[:switch]) and sizes[0] < summary_size
    assert set(sizes[switch:]) == {summary_size}
    # elu + 1 of width 4: [S | z] is 4 x 5 = 20 numbers per head, a block 4 + 5 = 9: the switch comes once
    # the heads (half at rate 1, half at rate 2) hold 20 / 9 blocks on average: (3 + 1) / 2 after 3 tokens,
    # (4 + 2) / 2 after 4
    assert switch == 3


@pytest.mark.parametrize("routing", ["soft", "top1"])
def test_gate_scaling_keeps_only_the_product_and_has_the_gradients_of_plain_multiplication(routing):
    """scale_heads (modules/resolution_gate.py) keeps the scaled heads, which the output projection keeps
    anyway, instead of the unscaled ones; its gradients for the heads and, through the gate, for the gate's
    weights equal those of heads * scales, also where top-1 routing makes scales 0."""
    from adamra_fairseq.modules.resolution_gate import ResolutionGate, scale_heads

    torch.manual_seed(4)
    gate = ResolutionGate(EMBED, 4, 2, routing=routing).double()
    with torch.no_grad():
        gate.proj.weight.normal_(std=0.5)
    x = torch.randn(5, 3, EMBED, dtype=torch.float64)
    heads = torch.randn(5, 3, 8, 6, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(5, 3, 8, 6, dtype=torch.float64)
    parameters = [heads, gate.proj.weight, gate.proj.bias]
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        scales = gate(x)
        scaled = scale_heads(heads, scales)
    assert not any(t.untyped_storage().data_ptr() == heads.untyped_storage().data_ptr() for t in saved)
    actual = torch.autograd.grad(scaled, parameters, upstream)
    expected = torch.autograd.grad(heads * gate(x).unsqueeze(-1), parameters, upstream)
    assert torch.equal(scaled, heads * scales.unsqueeze(-1))
    for got, want in zip(actual, expected):
        assert torch.allclose(got, want, atol=1e-12)
    if routing == "soft":  # every scale positive: the gradient check holds for the scales themselves too
        positive = (torch.rand(5, 3, 8, dtype=torch.float64) + 0.1).requires_grad_()
        assert torch.autograd.gradcheck(scale_heads, (heads, positive))


def test_top1_balance_loss_is_the_switch_formula_and_has_gradients():
    from adamra_fairseq.modules import ResolutionGate

    torch.manual_seed(3)
    gate = ResolutionGate(EMBED, 4, 2, routing="top1").double().train()
    with torch.no_grad():
        gate.proj.weight.normal_()
    x = torch.randn(6, 3, EMBED, dtype=torch.float64)
    scales = gate(x)
    probabilities = torch.softmax(gate.proj(x), dim=-1).reshape(-1, 4)
    chosen = probabilities.argmax(-1)
    fraction = torch.bincount(chosen, minlength=4).double() / chosen.numel()
    expected = 4 * (fraction * probabilities.mean(0)).sum()
    assert torch.allclose(gate.balance_loss, expected)
    gate.balance_loss.backward()
    assert gate.proj.weight.grad.abs().sum() > 0
    # exactly one rate (two heads) is kept per position, scaled by its gate value
    kept = (scales.reshape(-1, 8) != 0).sum(-1)
    assert bool((kept == 2).all())
    assert torch.allclose(scales.reshape(-1, 8).max(-1).values, probabilities.max(-1).values)
    gate.eval()
    gate(x)
    assert gate.balance_loss is None


def test_causal_marker_equals_the_triangular_mask():
    from adamra_fairseq.modules.multires_attention import causal_marker

    module = make_module(rates=(1, 4), chunk=8)
    x = torch.randn(13, 2, EMBED, dtype=torch.float64)
    with_mask, _ = module(x, x, x, attn_mask=future_mask(13))
    with_marker, _ = module(x, x, x, attn_mask=causal_marker())
    assert torch.equal(with_mask, with_marker)


@pytest.mark.parametrize("rates", [(1,), (1, 4)])
@pytest.mark.parametrize("memory", [dict(memory=3), dict(blocks=3)])
def test_cross_attention_memory_cached_equals_parallel_and_reference(rates, memory):
    """--adamra-cross-memory / -blocks: the written-out memory and softmax read, in training and in decoding."""
    module = make_cross(rates=rates, qk_norm="scale", feature_map="hedgehog", **memory)
    assert module.query_key.weight is None  # no feature map, so no learned projection for it
    state = check_cross_cached_equals_parallel_and_reference(module)
    cached = module._get_input_buffer(state)
    assert cached["memory_keys"].shape == (2, HEADS, 3, EMBED // HEADS)  # fixed by L, not by the lengths
