"""One attention layer, forward + backward, against sequence length: AdaMRA versus softmax attention.

usage: python scripts/benchmarks/bench_attention.py [--quick] [--threads 2] [--feature-map hedgehog] [--out results/bench_attention]

Our modules use --feature-map (default: the default preset's, Hedgehog's
learned softmax features; elu is the original preset's).

Columns (all with the same width, heads and input):
  mha           fairseq MultiheadAttention, no mask (encoder self-attention)
  mha_causal    fairseq MultiheadAttention with the decoder's n x n future mask
  sdpa          torch scaled_dot_product_attention (+ the same q/k/v/out projections), no mask
  linear        our module with a single rate 1 (the linear transformer)
  adamra        our module, bidirectional, rates 1,2,4,8
  adamra_causal our module, causal (chunked op), rates 1,2,4,8, given the empty causal marker that
                AdaMRADecoder passes instead of fairseq's n x n mask

Every point runs in a fresh forked process: time is the median of the
repeats after warm-up; memory is the growth of the process's peak resident
set (ru_maxrss) over its resident set before the point started, i.e. what the
step itself needed at its peak (weights, inputs, activations, gradients),
and the code of torch's libraries that the point's kernels load (on this CPU
build, 2026-12-02: about 20 MB for fairseq's layer and 25 MB for AdaMRA's,
whose kernels are more varied, at every length from 512 to 4096 tokens).
Each point also records that code (``code_mb``, the growth of its
file-backed resident pages), and the ratio lines give the memory ratio
without it.
By default that includes memory glibc's allocator keeps for reuse after
tensors are freed, which depends on the order of allocations as much as on
their sizes; with --live-memory each point's process maps every allocation
of 64 KiB or more on its own (mallopt M_MMAP_THRESHOLD), so a freed tensor
leaves the process at once and the peak counts the tensors alive together,
with the code pages above (Linux with glibc only). Every large tensor then
comes fresh from the kernel, which slows code that allocates many of them
(AdaMRA ran at about half its speed at 4096 tokens): read only the memory
column of such a run. A point that does not finish within --time-limit
seconds, or whose process dies (e.g. out of memory), is recorded as skipped
with the reason. (fairseq's
MultiheadAttention calls torch's multi_head_attention_forward, which on this
torch runs fused scaled-dot-product attention when no weights are requested:
its memory does not grow as n^2.)

Also measured: this machine's fp32 matmul rate (2048 x 2048), and the
achieved GFLOP/s of the AdaMRA core ops (attention without projections).
"""

import argparse
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
from datetime import datetime, timezone

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO_ROOT)

import torch  # noqa: E402

METHODS = ("mha", "mha_causal", "sdpa", "linear", "adamra", "adamra_causal")
FULL_LENGTHS = (128, 256, 512, 1024, 2048, 4096, 8192, 16384)
QUICK_LENGTHS = (128, 512, 2048, 4096)


def file_backed_rss_kb() -> int:
    """Resident pages of this process that map files (``RssFile`` in /proc/self/status): mostly the code of torch's
    libraries, which a point loads as it first calls each kernel; 0 where the kernel does not report it."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("RssFile:"):
                return int(line.split()[1])
    return 0


def current_rss_kb() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def build_layer(method, dim, heads, rates, feature_map):
    from fairseq.modules import MultiheadAttention

    from adamra_fairseq.modules import MultiResolutionAttention
    from adamra_fairseq.modules.options import AdaMRAOptions

    if method in ("mha", "mha_causal", "sdpa"):
        return MultiheadAttention(dim, heads, self_attention=True)
    options = AdaMRAOptions(rates=(1,) if method == "linear" else rates, routing="soft", balance_loss=0.0,
                            feature_map=feature_map, places=("encoder", "decoder", "cross"), chunk_size=64, eps=1e-6)
    return MultiResolutionAttention(dim, heads, options, self_attention=True)


def sdpa_forward(layer, x, heads):
    """Same projections as fairseq's module, attention by torch's fused kernel."""
    length, batch, dim = x.shape

    def split(t):
        return t.view(length, batch, heads, dim // heads).permute(1, 2, 0, 3)

    q, k, v = split(layer.q_proj(x)), split(layer.k_proj(x)), split(layer.v_proj(x))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    return layer.out_proj(out.permute(2, 0, 1, 3).reshape(length, batch, dim))


def layer_step(method, layer, x, heads, mask):
    if method == "sdpa":
        out = sdpa_forward(layer, x, heads)
    else:
        out, _ = layer(x, x, x, attn_mask=mask, need_weights=False)
    out.float().sum().backward()


def release_freed_memory() -> None:
    """Ask glibc to map every allocation of 64 KiB or more on its own, so that freeing it unmaps it (and to keep
    that threshold fixed instead of raising it as large blocks are freed)."""
    import ctypes

    m_mmap_threshold = -3  # mallopt parameter number, from glibc's malloc.h
    libc = ctypes.CDLL("libc.so.6")
    if libc.mallopt(m_mmap_threshold, 64 * 1024) != 1:
        raise OSError("mallopt(M_MMAP_THRESHOLD) failed: --live-memory needs Linux with glibc")


def run_point(method, length, args, queue):
    """Child process: one (method, length) point; puts a result dict on the queue."""
    if args.live_memory:
        release_freed_memory()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    baseline, code_baseline = current_rss_kb(), file_backed_rss_kb()
    layer = build_layer(method, args.dim, args.heads, tuple(args.rates), args.feature_map)
    x = torch.randn(length, args.batch, args.dim, requires_grad=True)
    mask = None
    if method == "mha_causal":
        mask = torch.triu(torch.full((length, length), float("-inf")), 1)
    elif method == "adamra_causal":
        from adamra_fairseq.modules.multires_attention import causal_marker

        mask = causal_marker()
    times = []
    for repeat in range(args.warmup + args.repeats):
        start = time.perf_counter()
        layer_step(method, layer, x, args.heads, mask)
        elapsed = time.perf_counter() - start
        layer.zero_grad(set_to_none=True)
        x.grad = None
        if repeat >= args.warmup:
            times.append(elapsed)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put({"time_s": statistics.median(times), "peak_mb": (peak - baseline) / 1024,
               "code_mb": (file_backed_rss_kb() - code_baseline) / 1024})


def measure(method, length, args):
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=run_point, args=(method, length, args, queue))
    process.start()
    process.join(args.time_limit)
    if process.is_alive():
        process.kill()
        process.join()
        return {"skipped": f"over the {args.time_limit:.0f} s time limit"}
    if process.exitcode != 0 or queue.empty():
        return {"skipped": f"crashed (exit code {process.exitcode})"}
    return queue.get()


def matmul_gflops(threads, size=2048, repeats=5):
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size ** 3 * repeats / (time.perf_counter() - start) / 1e9


def core_gflops(length, args, causal):
    """Achieved GFLOP/s of the AdaMRA core ops (pool, feature map, S/z, read-out), forward + backward.

    FLOPs counted: the matrix products only (2 per multiply-add), backward = 2 x forward.
    """
    from adamra_fairseq.ops.bidirectional import bidirectional_attention
    from adamra_fairseq.ops.causal import causal_attention
    from adamra_fairseq.ops.feature_maps import FEATURE_MAPS, feature_width

    torch.set_num_threads(args.threads)
    dim = args.dim // args.heads
    features = feature_width(args.feature_map, dim)  # F: 2D for hedgehog's [softmax(x), softmax(-x)]
    feature_map = FEATURE_MAPS[args.feature_map]
    group = args.heads // len(args.rates)
    qkv = [torch.randn(args.batch, group, length, dim, requires_grad=True) for _ in range(3)]
    flops = 0.0
    for rate in args.rates:
        blocks = length / rate
        if causal:
            chunk = 64
            # per chunk: C x (C/r) scores and read-out, chunk summaries, inter-chunk read-out
            flops += 2 * args.batch * group * (length * (chunk / rate) * (features + dim) + blocks * features * dim
                                                + length * features * dim)
        else:  # the state form (long inputs): summary and read-out
            flops += 2 * args.batch * group * (blocks + length) * features * (dim + 1)
    flops *= 3  # forward + backward

    def step():
        outputs = []
        for rate in args.rates:
            if causal:
                outputs.append(causal_attention(*qkv, rate, chunk_size=64, feature_map=feature_map))
            else:
                outputs.append(bidirectional_attention(*qkv, rate, feature_map=feature_map))
        sum(out.sum() for out in outputs).backward()

    step()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return flops / statistics.median(times) / 1e9


def data_memory(point) -> float:
    """A point's peak memory growth less the library code it loaded (``code_mb``, which stays resident once
    touched, so the later repeats reach their peak with all of it loaded): the memory its data needed."""
    return point["peak_mb"] - point.get("code_mb", 0.0)


def plot(results, lengths, path_prefix):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for method in METHODS:
        points = [(n, results[method][str(n)]) for n in lengths if "time_s" in results[method][str(n)]]
        if not points:
            continue
        ns = [n for n, _ in points]
        axes[0].loglog(ns, [p["time_s"] * 1000 for _, p in points], marker="o", label=method)
        axes[1].loglog(ns, [max(p["peak_mb"], 0.1) for _, p in points], marker="o", label=method)
    axes[0].set(xlabel="sequence length n", ylabel="forward + backward (ms)", title="time")
    axes[1].set(xlabel="sequence length n", ylabel="peak memory growth (MB)", title="memory")
    for axis in axes:
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path_prefix + ".png", dpi=110)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced sweep (n up to 4096, 2 repeats)")
    parser.add_argument("--lengths", type=str, help="comma list of sequence lengths (overrides the sweep)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rates", type=str, default="1,2,4,8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--feature-map", default=None,
                        help="feature map of our modules (default: the default preset's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--time-limit", type=float, default=300.0, help="seconds per point")
    parser.add_argument("--live-memory", action="store_true",
                        help="count the tensors alive at the peak, not memory the allocator keeps after frees "
                             "(glibc's mmap threshold fixed at 64 KiB in each point's process; slows the "
                             "timings, so read only the memory of such a run)")
    parser.add_argument("--out", default=os.path.join(REPO_ROOT, "results", "bench_attention"))
    args = parser.parse_args()
    args.rates = [int(r) for r in args.rates.split(",")]
    from adamra_fairseq.modules.options import DEFAULT_PRESET, PRESETS
    from adamra_fairseq.ops.feature_maps import FEATURE_MAPS

    args.feature_map = args.feature_map or PRESETS[DEFAULT_PRESET]["adamra_feature_map"]
    if args.feature_map not in FEATURE_MAPS:
        parser.error(f"--feature-map {args.feature_map}: choose one of {', '.join(FEATURE_MAPS)}")
    if args.dim % args.heads or args.heads % len(args.rates):
        parser.error("--dim must be divisible by --heads, and the number of rates must divide --heads")
    if args.quick:
        args.repeats = min(args.repeats, 2)
    lengths = [int(n) for n in args.lengths.split(",")] if args.lengths else (
        QUICK_LENGTHS if args.quick else FULL_LENGTHS)

    import logging

    from fairseq.modules import MultiheadAttention  # noqa: F401  (import once before forking)

    import adamra_fairseq.modules  # noqa: F401

    logging.getLogger().setLevel(logging.WARNING)  # importing fairseq turns on DEBUG logging

    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    results = {method: {} for method in METHODS}
    header = f"{'n':>6} | " + " | ".join(f"{m:>14}" for m in METHODS)
    memory = "live tensors" if args.live_memory else "allocator's default"
    print(f"forward+backward time (ms) / peak memory growth (MB, {memory}); B={args.batch} d={args.dim} "
          f"H={args.heads} rates={args.rates} feature map {args.feature_map} threads={args.threads}")
    print(header)
    print("-" * len(header))
    for length in lengths:
        cells = []
        for method in METHODS:
            point = measure(method, length, args)
            results[method][str(length)] = point
            cells.append(f"{point['time_s'] * 1000:7.1f}/{point['peak_mb']:6.0f}" if "time_s" in point
                         else f"{'skipped':>14}")
        print(f"{length:>6} | " + " | ".join(f"{c:>14}" for c in cells), flush=True)

    torch.set_num_threads(args.threads)
    matmul = matmul_gflops(args.threads)
    core_length = lengths[-1]
    core = {"bidirectional": core_gflops(core_length, args, causal=False),
            "causal": core_gflops(core_length, args, causal=True)}
    print(f"\nfp32 matmul 2048x2048: {matmul:.1f} GFLOP/s; AdaMRA core at n={core_length}: "
          f"bidirectional {core['bidirectional']:.1f} GFLOP/s ({100 * core['bidirectional'] / matmul:.0f}%), "
          f"causal {core['causal']:.1f} GFLOP/s ({100 * core['causal'] / matmul:.0f}%)")
    print("\nratios (time mha / time adamra, memory mha / memory adamra):")
    for length in lengths:
        mha, ada = results["mha"][str(length)], results["adamra"][str(length)]
        causal, bidir = results["adamra_causal"][str(length)], ada
        parts = []
        if "time_s" in mha and "time_s" in ada:
            parts.append(f"speed x{mha['time_s'] / ada['time_s']:.2f}, memory x{mha['peak_mb'] / max(ada['peak_mb'], 1e-3):.1f}"
                         f" (x{data_memory(mha) / max(data_memory(ada), 1e-3):.2f} without code pages)")
        else:
            parts.append("mha " + mha.get("skipped", "-"))
        if "time_s" in causal and "time_s" in bidir:
            parts.append(f"causal/bidirectional time x{causal['time_s'] / bidir['time_s']:.2f}")
        mha_causal = results["mha_causal"][str(length)]
        if "time_s" in causal and "time_s" in mha_causal:
            parts.append(f"causal: speed x{mha_causal['time_s'] / causal['time_s']:.2f}, "
                         f"memory x{mha_causal['peak_mb'] / max(causal['peak_mb'], 1e-3):.1f}")
        print(f"  n={length}: " + "; ".join(parts))

    record = {
        "command": " ".join(sys.argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(), "threads": args.threads, "torch": torch.__version__,
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "memory_measure": "peak RSS growth of a fresh forked process per point (ru_maxrss - RSS before)",
        "matmul_gflops": matmul, "core_gflops": core, "core_length": core_length,
        "results": results,
    }
    with open(args.out + ".json", "w") as handle:
        json.dump(record, handle, indent=1)
    plot(results, lengths, args.out)
    print(f"\nwrote {args.out}.json and {args.out}.png")


if __name__ == "__main__":
    main()
