"""Whole-model training steps on long segments: the transformer against AdaMRA, 128 .. 8192 tokens.

usage: python scripts/benchmarks/bench_long.py [--size small|tiny] [--lengths 128,...,8192] [--steps 2]
                                    [--threads 2] [--device cpu|cuda] [--adamra-* ...]
                                    [--out results/bench_long]

One point = one encoder-decoder training step (forward, label-smoothed
cross-entropy, backward, Adam update) of a batch of one segment with an
L-token source and an L-token target, randomly initialised models of the
same size (fairseq's ``transformer`` with the twin sizes against
``adamra_transformer_*``), dropout on. Each (model, length) runs in a fresh
forked process (on CUDA: one after the other in this process, the
allocator's peak reset before each): one warm-up step, then the median of
``--steps`` timed steps, in target tokens per second; the memory is the growth of the
process's peak resident set over its resident set before building the
model (weights, optimiser state and activations); with ``--device cuda``,
the peak of torch's CUDA allocator, timed after a synchronisation. Prints a table with the
AdaMRA / transformer ratios and writes JSON and a plot.
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
from bench_generate import MODELS, _lengths, adamra_settings, build_model, describe_adamra, in_child  # noqa: E402

from adamra_fairseq.modules.options import add_adamra_args  # noqa: E402

LENGTHS = (128, 256, 512, 1024, 2048, 4096, 8192)


def train_point(kind, length, args):
    """Times training steps on one L-token segment; returns tokens/s and peak memory."""
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    baseline = current_rss_kb()
    model, dictionary = build_model(kind, args.size, args.vocab, length + 8, adamra_settings(args))
    model.train().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(length)
    source = torch.randint(dictionary.nspecial, len(dictionary), (1, length), generator=generator)
    target = torch.randint(dictionary.nspecial, len(dictionary), (1, length), generator=generator)
    source[:, -1] = dictionary.eos()
    previous = torch.cat([torch.full((1, 1), dictionary.eos()), target[:, :-1]], dim=1)
    source, target, previous = source.to(device), target.to(device), previous.to(device)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step():
        optimizer.zero_grad()
        logits, _ = model(source, torch.tensor([length], device=device), previous)
        lprobs = F.log_softmax(logits.float(), dim=-1).view(-1, logits.size(-1))
        nll = F.nll_loss(lprobs, target.view(-1), reduction="sum")
        loss = 0.9 * nll - 0.1 * lprobs.mean(dim=-1).sum()  # label smoothing 0.1
        loss.backward()
        optimizer.step()

    step()  # warm-up
    times = []
    for _ in range(args.steps):
        synchronize()
        start = time.perf_counter()
        step()
        synchronize()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) / 1024
    seconds = statistics.median(times)
    return {"length": length, "step_s": seconds, "tokens_per_s": length / seconds, "peak_mb": peak_mb}


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for kind, points in results.items():
        lengths = [p["length"] for p in points]
        axes[0].loglog(lengths, [p["tokens_per_s"] for p in points], marker="o", label=kind, base=2)
        axes[1].loglog(lengths, [p["peak_mb"] for p in points], marker="o", label=kind, base=2)
    axes[0].set(xlabel="segment length (source = target tokens)", ylabel="target tokens/s",
                title="training step throughput")
    axes[1].set(xlabel="segment length (source = target tokens)", ylabel="peak memory growth (MB)",
                title="training step memory")
    for axis in axes:
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=("tiny", "small"), default="small",
                        help="model sizes: small (256-d, 3+3 layers, 4 heads of 64) or tiny (128-d, 2+2)")
    parser.add_argument("--lengths", type=_lengths, default=LENGTHS, help="comma list of segment lengths")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per point (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where to run (cuda: memory is the CUDA allocator's peak)")
    add_adamra_args(parser)  # AdaMRA's settings (docs/method.md); default: the model's default
    parser.add_argument("--out", default=os.path.join(REPO_ROOT, "results", "bench_long"))
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    if not args.lengths:
        parser.error("--lengths is empty: give at least one length, e.g. 1024")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")

    import logging

    import adamra_fairseq  # noqa: F401  (registers the models before forking)

    logging.getLogger().setLevel(logging.WARNING)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    print(f"training step, {args.size} sizes, one segment of L source and L target tokens, "
          f"{args.device} ({args.threads} threads), AdaMRA {describe_adamra(adamra_settings(args))}")
    print(f"{'length':>6} | {'transformer tok/s':>17} {'MB':>7} | {'adamra tok/s':>12} {'MB':>7} | "
          f"{'speed x':>7} {'memory x':>8}")
    results = {kind: [] for kind in MODELS}
    for length in args.lengths:
        if args.device == "cuda":  # CUDA does not survive a fork; the allocator's peak is reset per point
            points = {kind: train_point(kind, length, args) for kind in MODELS}
        else:
            points = {kind: in_child(train_point, kind, length, args) for kind in MODELS}
        for kind, point in points.items():
            results[kind].append(point)
        vanilla, ada = points["transformer"], points["adamra"]
        print(f"{length:>6} | {vanilla['tokens_per_s']:>17.1f} {vanilla['peak_mb']:>7.0f} | "
              f"{ada['tokens_per_s']:>12.1f} {ada['peak_mb']:>7.0f} | "
              f"{ada['tokens_per_s'] / vanilla['tokens_per_s']:>7.2f} "
              f"{ada['peak_mb'] / max(vanilla['peak_mb'], 1e-9):>8.2f}", flush=True)
    faster = [p["length"] for v, p in zip(results["transformer"], results["adamra"])
              if p["tokens_per_s"] > v["tokens_per_s"]]
    print(f"\nAdaMRA faster at: {', '.join(map(str, faster)) or 'no length measured'}")
    record = {"command": " ".join(sys.argv), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "cpu": cpu_model(), "threads": args.threads,
              "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None, "torch": torch.__version__,
              "config": vars(args), "results": results}
    with open(args.out + ".json", "w") as handle:
        json.dump(record, handle)
    plot(results, args.out + ".png")
    print(f"wrote {args.out}.json and {args.out}.png")


if __name__ == "__main__":
    main()
