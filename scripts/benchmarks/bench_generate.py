"""Decoding speed: randomly initialised transformer vs adamra_transformer of the same size, through
fairseq's SequenceGenerator (beam search with incremental decoding).

usage: python scripts/benchmarks/bench_generate.py [--quick] [--threads 2] [--size tiny|small|iwslt]
                                       [--output-lengths L,...] [--source-lengths S,...] [--out results/bench_generate]

Two sweeps, each point in a fresh forked process:
  output length: source length fixed (--source-len), output forced to exactly L tokens
                 (min_len = max_len = L), L in 16 .. 1024 (or --output-lengths): tokens/s, step time
                 by position, peak memory;
  source length: output fixed (--fixed-output-len), source S in 16 .. 1024 (or --source-lengths; an
                 empty list skips it): time per step (the cross-attention cost: AdaMRA caches per-head
                 summaries, softmax reads all S keys).
Memory is the growth of the process's peak resident set over its resident set before the point.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time
from datetime import datetime, timezone

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.join(REPO_ROOT, "scripts", "benchmarks"))

import torch  # noqa: E402

from bench_attention import cpu_model, current_rss_kb  # noqa: E402

from adamra_fairseq.modules.options import add_adamra_args  # noqa: E402

MODELS = {"transformer": "transformer", "adamra": "adamra_transformer"}
FULL_OUTPUT_LENGTHS = (16, 32, 64, 128, 256, 512, 1024)
QUICK_OUTPUT_LENGTHS = (16, 64, 256)
FULL_SOURCE_LENGTHS = (16, 64, 256, 1024)
QUICK_SOURCE_LENGTHS = (16, 256)
REPORT_POSITIONS = (1, 16, 64, 256, 512, 1024, 2048, 4096)


class _Task:
    """The two dictionaries are all that building a translation model needs from a task."""

    def __init__(self, dictionary):
        self.source_dictionary = dictionary
        self.target_dictionary = dictionary


def adamra_settings(args):
    """The ``--adamra-*`` values of a benchmark's command line: the preset, and every flag given."""
    return {name: value for name, value in vars(args).items() if name.startswith("adamra_") and value is not None}


def describe_adamra(settings):
    """``preset P`` and the other ``--adamra-*`` flags given, for a benchmark's header line."""
    flags = [f"--{name.replace('_', '-')} {value}" for name, value in settings.items() if name != "adamra_preset"]
    return " ".join([f"preset {settings['adamra_preset']}"] + flags)


def add_random_batch_args(parser, sentences):
    """``--size``, ``--sentences``, ``--length``, ``--vocab`` and AdaMRA's flags: both models on one batch of
    random sentences (scripts/benchmarks/profile_training.py)."""
    parser.add_argument("--size", choices=("tiny", "small"), default="small")
    parser.add_argument("--sentences", type=int, default=sentences, help="sentences in the batch")
    parser.add_argument("--length", type=int, default=30, help="tokens per source and target sentence")
    parser.add_argument("--vocab", type=int, default=8000)
    add_adamra_args(parser)  # AdaMRA's settings (docs/method.md); default: the model's default


def check_random_batch_args(parser, args):
    if args.sentences < 1 or args.length < 2:
        parser.error("--sentences must be at least 1 and --length at least 2")


def random_batch(dictionary, sentences, length):
    """``(source, target)``, each ``(sentences, length)`` random words (the source ending in eos), seed 0."""
    generator = torch.Generator().manual_seed(0)
    source = torch.randint(dictionary.nspecial, len(dictionary), (sentences, length), generator=generator)
    target = torch.randint(dictionary.nspecial, len(dictionary), (sentences, length), generator=generator)
    source[:, -1] = dictionary.eos()
    return source, target


def build_model(kind, size, vocab, max_positions, adamra):
    """A fresh model and its dictionary; ``adamra`` (from :func:`adamra_settings`) sets AdaMRA's options."""
    from argparse import Namespace

    from fairseq.data import Dictionary
    from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY

    dictionary = Dictionary()
    for index in range(vocab - len(dictionary)):
        dictionary.add_symbol(f"w{index}")
    arch = {("transformer", "tiny"): "transformer_adamra_tiny_baseline",
            ("adamra", "tiny"): "adamra_transformer_tiny",
            ("transformer", "small"): "transformer_adamra_small_baseline",
            ("adamra", "small"): "adamra_transformer_small",
            ("transformer", "iwslt"): "transformer_iwslt_de_en",
            ("adamra", "iwslt"): "adamra_transformer_iwslt_de_en"}[(kind, size)]
    args = Namespace(arch=arch, max_source_positions=max_positions, max_target_positions=max_positions,
                     share_all_embeddings=True, criterion="label_smoothed_cross_entropy")
    if kind == "adamra":
        vars(args).update(adamra)
    ARCH_CONFIG_REGISTRY[arch](args)
    torch.manual_seed(0)
    return ARCH_MODEL_REGISTRY[arch].build_model(args, _Task(dictionary)).eval(), dictionary


def decode_point(kind, source_len, output_len, beam, args):
    """Generates exactly ``output_len`` tokens for a batch of random sources; returns timings."""
    from fairseq.sequence_generator import SequenceGenerator

    torch.set_num_threads(args.threads)
    baseline = current_rss_kb()
    model, dictionary = build_model(kind, args.size, args.vocab, max(source_len, output_len) + 8, adamra_settings(args))
    generator = SequenceGenerator([model], dictionary, beam_size=beam, min_len=output_len,
                                  max_len_a=0, max_len_b=output_len)
    torch.manual_seed(1)
    source = torch.randint(dictionary.nspecial, len(dictionary), (args.batch, source_len))
    source[:, -1] = dictionary.eos()
    sample = {"net_input": {"src_tokens": source, "src_lengths": torch.full((args.batch,), source_len)}}
    step_times = []
    decoder_forward = model.decoder.forward

    def timed_forward(*forward_args, **kwargs):
        start = time.perf_counter()
        output = decoder_forward(*forward_args, **kwargs)
        step_times.append(time.perf_counter() - start)
        return output

    model.decoder.forward = timed_forward
    with torch.no_grad():
        start = time.perf_counter()
        hypotheses = generator.generate([model], sample)
        total = time.perf_counter() - start
    lengths = {len(h[0]["tokens"]) for h in hypotheses}
    assert lengths == {output_len + 1}, f"forced length not met: {lengths}"  # + eos
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"total_s": total, "tokens_per_s": args.batch * output_len / total,
            "step_ms": [t * 1000 for t in step_times], "peak_mb": (peak - baseline) / 1024}


def in_child(function, *function_args):
    """``function(*function_args)`` in a forked process (a clean peak resident set); its error if it fails."""
    import multiprocessing
    import queue as queues
    import traceback

    context = multiprocessing.get_context("fork")
    results = context.Queue()

    def target():
        try:
            results.put(("ok", function(*function_args)))
        except BaseException:  # reported in the parent, which would otherwise wait forever
            results.put(("error", traceback.format_exc()))

    process = context.Process(target=target)
    process.start()
    while True:
        try:
            status, result = results.get(timeout=5)
            break
        except queues.Empty:
            if not process.is_alive():
                raise RuntimeError(f"benchmark process died (exit code {process.exitcode}) without a result")
    process.join()
    if status == "error":
        raise RuntimeError(f"benchmark process failed:\n{result}")
    return result


def window_median(step_ms, position, width=8):
    """Median step time around ``position`` (1-based), or None past the end."""
    if position > len(step_ms):
        return None
    lo = max(0, position - 1 - width // 2)
    return statistics.median(step_ms[lo: lo + width])


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for (kind, beam), points in results["output_sweep"].items():
        longest = max(points, key=lambda p: p["output_len"])
        steps = longest["step_ms"]
        axes[0].plot(range(1, len(steps) + 1), steps, label=f"{kind} beam {beam}", linewidth=0.8)
        axes[1].loglog([p["output_len"] for p in points], [p["tokens_per_s"] for p in points],
                       marker="o", label=f"{kind} beam {beam}")
    axes[0].set(xlabel="decoding step (position)", ylabel="decoder step time (ms)", title="step time by position")
    axes[1].set(xlabel="output length", ylabel="tokens/s", title="throughput")
    for axis in axes:
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _lengths(text):
    """``"16,64"`` -> (16, 64); ``""`` -> (); an argparse error for anything else."""
    try:
        lengths = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma list of lengths, e.g. 256,1024")
    if any(length < 1 for length in lengths):
        raise argparse.ArgumentTypeError(f"lengths must be positive: '{text}'")
    return lengths


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--size", choices=("tiny", "small", "iwslt"), default="iwslt",
                        help="model sizes: tiny (128-d, 2+2), small (256-d, 3+3, 4 heads of 64) or iwslt "
                             "(512-d, 6+6, 4 heads)")
    parser.add_argument("--threads", type=int, default=2)
    add_adamra_args(parser)  # AdaMRA's settings (docs/method.md); default: the model's default
    parser.add_argument("--batch", type=int, default=1, help="sentences per batch")
    parser.add_argument("--beams", type=str, default="1,5")
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--source-len", type=int, default=32)
    parser.add_argument("--fixed-output-len", type=int, default=64)
    parser.add_argument("--output-lengths", type=_lengths, help="comma list replacing the output-length sweep")
    parser.add_argument("--source-lengths", type=_lengths,
                        help="comma list replacing the source-length sweep; '' skips it")
    parser.add_argument("--out", default=os.path.join(REPO_ROOT, "results", "bench_generate"))
    args = parser.parse_args()
    beams = [int(b) for b in args.beams.split(",")]
    output_lengths = args.output_lengths or (QUICK_OUTPUT_LENGTHS if args.quick else FULL_OUTPUT_LENGTHS)
    source_lengths = args.source_lengths
    if source_lengths is None:
        source_lengths = QUICK_SOURCE_LENGTHS if args.quick else FULL_SOURCE_LENGTHS

    import logging

    import fairseq.sequence_generator  # noqa: F401  (import once before forking)

    import adamra_fairseq  # noqa: F401

    logging.getLogger().setLevel(logging.WARNING)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    print(f"decoding, {args.size} sizes, batch {args.batch}, source {args.source_len} tokens, "
          f"threads {args.threads}")
    print(f"{'model':>12} {'beam':>4} {'out len':>7} {'tokens/s':>9} {'peak MB':>8}  step ms at positions "
          + ",".join(map(str, REPORT_POSITIONS)))
    output_sweep = {}
    for beam in beams:
        for kind in MODELS:
            points = []
            for length in output_lengths:
                point = in_child(decode_point, kind, args.source_len, length, beam, args)
                point["output_len"] = length
                points.append(point)
                at = [window_median(point["step_ms"], p) for p in REPORT_POSITIONS]
                print(f"{kind:>12} {beam:>4} {length:>7} {point['tokens_per_s']:>9.1f} {point['peak_mb']:>8.0f}  "
                      + " ".join("-" if v is None else f"{v:.2f}" for v in at), flush=True)
            output_sweep[(kind, beam)] = points
    if source_lengths:
        print(f"\nsource-length sweep (output {args.fixed_output_len} tokens, beam {beams[-1]}): mean step ms")
    source_sweep = {}
    for kind in MODELS:
        source_sweep[kind] = []
        for source_len in source_lengths:
            point = in_child(decode_point, kind, source_len, args.fixed_output_len, beams[-1], args)
            point["source_len"] = source_len
            source_sweep[kind].append(point)
            print(f"{kind:>12} source {source_len:>5}: {statistics.mean(point['step_ms'][1:]):.2f} ms/step, "
                  f"{point['tokens_per_s']:.1f} tokens/s", flush=True)

    print("\nratios adamra / transformer (tokens/s) and step-time growth (position 1024 or last / position 64):")
    for beam in beams:
        for vanilla, ada in zip(output_sweep[("transformer", beam)], output_sweep[("adamra", beam)]):
            print(f"  beam {beam}, {vanilla['output_len']:>4} tokens: speed x{ada['tokens_per_s'] / vanilla['tokens_per_s']:.2f}")
        for kind in MODELS:
            longest = output_sweep[(kind, beam)][-1]
            last = min(1024, len(longest["step_ms"]))
            early = window_median(longest["step_ms"], 64)
            if early:
                print(f"  beam {beam}, {kind}: step time at {last} / at 64 = "
                      f"{window_median(longest['step_ms'], last) / early:.2f}")

    results = {"output_sweep": {f"{k}|beam{b}": v for (k, b), v in output_sweep.items()},
               "source_sweep": source_sweep}
    record = {"command": " ".join(sys.argv), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "cpu": cpu_model(), "threads": args.threads, "torch": torch.__version__,
              "config": vars(args), "results": results}
    with open(args.out + ".json", "w") as handle:
        json.dump(record, handle)
    plot({"output_sweep": output_sweep}, args.out + ".png")
    print(f"\nwrote {args.out}.json and {args.out}.png")


if __name__ == "__main__":
    main()
