"""Where a training step's time and memory go at MT lengths: the transformer against AdaMRA, part by part.

usage: python scripts/benchmarks/profile_training.py [--size small|tiny] [--sentences 136] [--length 30]
                                                     [--repeats 7] [--threads 1] [--rows 15] [--top 12]
                                                     [--adamra-* ...]

Builds both models with random weights (as scripts/benchmarks/bench_long.py
does) and, on one batch of random sentences (``--sentences`` x ``--length``
tokens on each side; the default is about the 4096-token batches of
scripts/train.sh), times forward + backward of

* the whole model (cross-entropy of random targets),
* each attention module of the first layers alone, on random inputs of the
  batch's shape: encoder self-attention, decoder self-attention (with the
  decoder's future mask) and encoder-decoder attention; times the number of
  layers, that estimates each part's share of the step,
* the attention op inside the self-attention modules alone (after the
  projections, before the output projection): AdaMRA's, and torch's fused
  softmax attention (scaled_dot_product_attention), which fairseq's
  MultiheadAttention calls in training when no attention weights are asked
  for,

fastest of ``--repeats``, the two models alternating within each repeat.
Then ``torch.profiler``'s operators of AdaMRA's whole step that take the
most time. Only relative numbers mean much: this machine's speed drifts, so
compare the two columns of one run. scripts/benchmarks/bench_training.py gives the
words/s of real fairseq-train runs.

Last, what one training forward of each model keeps for its backward pass
(every tensor autograd saves, through ``torch.autograd.graph.saved_tensors_hooks``,
each storage once), under the innermost line of fairseq, AdaMRA or
``torch.nn.functional`` that saved it, the ``--top`` lines per model:
activation memory is what separates the two models' training peaks. These
numbers do not depend on the machine.
"""

import argparse
import collections
import os
import sys
import time
import traceback

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.join(REPO_ROOT, "scripts", "benchmarks"))

import torch  # noqa: E402

from bench_generate import (  # noqa: E402
    MODELS, adamra_settings, add_random_batch_args, build_model, check_random_batch_args, describe_adamra, random_batch,
)

from adamra_fairseq.modules.multires_attention import MultiResolutionAttention  # noqa: E402


SOURCE_MARKERS = ("adamra_fairseq", os.sep + "fairseq" + os.sep, os.path.join("torch", "nn", "functional"))


def saving_line() -> str:
    """``file:line code`` of the innermost frame of the model code that is saving a tensor."""
    for frame in reversed(traceback.extract_stack()):
        if any(marker in frame.filename for marker in SOURCE_MARKERS):
            return f"{os.path.basename(frame.filename)}:{frame.lineno} {(frame.line or '').strip()[:70]}"
    return "(elsewhere)"


def saved_bytes_by_line(model, source, target):
    """``{line: bytes}`` saved for backward by one forward of ``model``; each storage counted once."""
    by_line, seen = collections.Counter(), set()

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            by_line[saving_line()] += storage.nbytes()
        return tensor

    lengths = torch.full((source.size(0),), source.size(1))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(source, lengths, target)
    return by_line


# Rows that time the attention op alone (q, k, v of the heads' shape in, the heads' outputs out): a part of
# the module rows above them, not counted again in "the rest".
CORE = "  of which the attention op: "


def step_parts(model, source, lengths, prev_output, target, generator):
    """``{part: (callable returning the part's output, layers it stands for)}`` for ``model``'s training step:
    the loss for the whole step, the output tensor of a module or op (differentiated along a random gradient,
    :func:`upstream_gradient`)."""
    steps, channels = source.size(1), model.encoder.embed_tokens.embedding_dim
    hidden = torch.randn(steps, source.size(0), channels, generator=generator, requires_grad=True)
    memory = torch.randn(steps, source.size(0), channels, generator=generator, requires_grad=True)
    future = torch.triu(torch.full((steps, steps), float("-inf")), 1)
    encoder_layer, decoder_layer = model.encoder.layers[0], model.decoder.layers[0]

    def whole():
        logits, _ = model(source, lengths, prev_output)
        return torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), target.view(-1))

    encoder_attention, decoder_attention = encoder_layer.self_attn, decoder_layer.self_attn
    heads, head_dim = encoder_attention.num_heads, channels // encoder_attention.num_heads
    adamra = isinstance(encoder_attention, MultiResolutionAttention)
    key_dim = encoder_attention.query_key.output_dim if adamra else head_dim  # q/k after AdaMRA's transform
    q, k, v = (torch.randn(source.size(0), heads, steps, dim, generator=generator, requires_grad=True)
               for dim in (key_dim, key_dim, head_dim))
    if adamra:  # the op the module takes for this length
        encoder_core = lambda: encoder_attention._bidirectional(q, k, v, None)  # noqa: E731
        decoder_core = lambda: decoder_attention._parallel_self(q, k, v, None, future)  # noqa: E731
    else:  # what fairseq's MultiheadAttention calls in training (no attention weights asked for)
        encoder_core = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v)  # noqa: E731
        decoder_core = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
    return {
        "whole step": (whole, 1),
        "encoder self-attention": (lambda: encoder_attention(hidden, hidden, hidden)[0], len(model.encoder.layers)),
        "decoder self-attention": (lambda: decoder_attention(hidden, hidden, hidden, attn_mask=future)[0],
                                   len(model.decoder.layers)),
        "cross-attention": (lambda: decoder_layer.encoder_attn(hidden, memory, memory, static_kv=True)[0],
                            len(model.decoder.layers)),
        CORE + "encoder self-attention": (encoder_core, len(model.encoder.layers)),
        CORE + "decoder self-attention": (decoder_core, len(model.decoder.layers)),
    }


def upstream_gradient(cache, key, out):
    """The gradient that ``out`` is differentiated along: 1 for a loss, else a random tensor of its shape made
    once per ``key`` (``out.sum()`` would send every module an expanded gradient with zero strides, which some
    of torch's batched products read by a slow path that no training step takes)."""
    if key not in cache:
        cache[key] = torch.ones_like(out) if out.dim() == 0 else torch.randn(
            out.shape, generator=torch.Generator().manual_seed(2), dtype=out.dtype)
    return cache[key]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_random_batch_args(parser, sentences=136)
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of each part (the fastest counts)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=15, help="operators shown in AdaMRA's profile")
    parser.add_argument("--top", type=int, default=12, help="lines shown per model for the saved tensors")
    args = parser.parse_args()
    check_random_batch_args(parser, args)
    if min(args.repeats, args.threads, args.rows, args.top) < 1:
        parser.error("--repeats, --threads, --rows and --top must be positive")

    import logging

    import adamra_fairseq  # noqa: F401  (registers the models)

    logging.getLogger().setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    settings = adamra_settings(args)
    print(f"forward + backward, {args.size} sizes, {args.sentences} sentences of {args.length} tokens, "
          f"{args.threads} thread(s), fastest of {args.repeats}; AdaMRA {describe_adamra(settings)}")
    parts = {}
    for kind in MODELS:
        model, dictionary = build_model(kind, args.size, args.vocab, args.length + 8, settings)
        model.train()
        source, target = random_batch(dictionary, args.sentences, args.length)
        generator = torch.Generator().manual_seed(1)
        prev_output = torch.cat([torch.full((args.sentences, 1), dictionary.eos()), target[:, :-1]], dim=1)
        lengths = torch.full((args.sentences,), args.length)
        parts[kind] = (model, step_parts(model, source, lengths, prev_output, target, generator))
    times = {kind: {part: [] for part in model_parts} for kind, (_, model_parts) in parts.items()}
    upstream = {}
    for _ in range(args.repeats + 1):  # the first round warms up
        for kind, (model, model_parts) in parts.items():
            for part, (forward, _) in model_parts.items():
                model.zero_grad(set_to_none=True)
                start = time.perf_counter()
                out = forward()
                out.backward(upstream_gradient(upstream, (kind, part), out))
                times[kind][part].append(time.perf_counter() - start)
    best = {kind: {part: 1000 * min(seconds[1:]) for part, seconds in by_part.items()} for kind, by_part in times.items()}

    print(f"\n| part (layers) | transformer ms | AdaMRA ms | AdaMRA / transformer |\n|---|---:|---:|---:|")
    for part, (_, layers) in parts["adamra"][1].items():
        base, ours = best["transformer"][part] * layers, best["adamra"][part] * layers
        print(f"| {part} (x{layers}) | {base:.1f} | {ours:.1f} | {ours / base:.2f} |")
    rest = {kind: by_part["whole step"] - sum(
        by_part[part] * layers for part, (_, layers) in parts[kind][1].items()
        if part != "whole step" and not part.startswith(CORE))
        for kind, by_part in best.items()}
    print(f"| the rest (embeddings, feed-forward blocks, norms, output layer, loss) | {rest['transformer']:.1f} | "
          f"{rest['adamra']:.1f} | {rest['adamra'] / rest['transformer']:.2f} |")

    from torch.profiler import ProfilerActivity, profile

    model, model_parts = parts["adamra"]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model.zero_grad(set_to_none=True)
        model_parts["whole step"][0]().backward()
    print("\nAdaMRA's whole step by operator:")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))

    for kind, (model, _) in parts.items():
        source, target = random_batch(model.encoder.dictionary, args.sentences, args.length)
        by_line = saved_bytes_by_line(model, source, target)
        print(f"\n{kind}: {sum(by_line.values()) / 2**20:.2f} MB saved for the backward pass by one forward")
        for line, size in by_line.most_common(args.top):
            print(f"{size / 2**20:8.1f} MB  {line}")


if __name__ == "__main__":
    main()
