"""Optional GPU check of the attention ops: CUDA results against the CPU naive reference, then speed.

usage: python scripts/benchmarks/gpu_check.py [--lengths 1024,...] [--out results/gpu_check.json]

Needs only torch with CUDA (the ops are pure torch; fairseq is not
imported, so this runs on a machine that has no fairseq). Nothing in the
test suite depends on it.

1. Correctness, float64 on the GPU against the naive reference computed on
   the CPU: bidirectional attention (state and quadratic forms, left pads),
   chunked causal attention (with and without the learned decay), the dense
   all-heads forms of short inputs, the one-token recurrent step (also in
   place), and the gradients of the first two; then the
   error of bfloat16 and float32 inputs (accumulation in float32).
2. Speed and memory of one head group's forward + backward at long lengths,
   B=1, H=8, head width 64, Hedgehog features (128): the bidirectional and
   causal ops against torch's scaled_dot_product_attention (flash / memory
   efficient kernels), in bfloat16, timed with CUDA events.
"""

import argparse
import importlib.util
import json
import os
import sys
from datetime import datetime, timezone

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_ops():
    """``adamra_fairseq/ops`` as a package of its own, without the plugin's fairseq imports."""
    folder = os.path.join(REPO_ROOT, "adamra_fairseq", "ops")
    spec = importlib.util.spec_from_file_location("adamra_ops", os.path.join(folder, "__init__.py"),
                                                  submodule_search_locations=[folder])
    package = importlib.util.module_from_spec(spec)
    sys.modules["adamra_ops"] = package
    spec.loader.exec_module(package)
    modules = {}
    for name in ("bidirectional", "causal", "dense", "feature_maps", "naive", "recurrent"):
        modules[name] = __import__(f"adamra_ops.{name}", fromlist=[name])
    return modules


def correctness(ops, device):
    """Largest absolute differences of every path against the CPU reference (float64)."""
    naive = ops["naive"].naive_adamra_attention
    bidirectional = ops["bidirectional"].bidirectional_attention
    causal = ops["causal"].causal_attention
    feature_map = ops["feature_maps"].softmax_pair
    generator = torch.Generator().manual_seed(0)
    batch, heads, length, dim = 3, 2, 45, 16
    q, k, v = (torch.randn(batch, heads, length, dim, generator=generator, dtype=torch.float64) for _ in range(3))
    lengths = torch.tensor([45, 30, 7])
    mask = torch.arange(length)[None, :] < (length - lengths)[:, None]  # left padding, as fairseq's sources
    on_gpu = [x.to(device) for x in (q, k, v)]
    report = {}
    for rate in (1, 2, 4, 8):
        expected = naive(q, k, v, [rate] * heads, mask, feature_map=feature_map)
        for form in ("state", "quadratic"):
            got = bidirectional(*on_gpu, rate, mask.to(device), feature_map=feature_map, form=form).cpu()
            report[f"bidirectional rate {rate} {form}"] = (got - expected).abs().max().item()
        expected = naive(q, k, v, [rate] * heads, causal=True, feature_map=feature_map)
        got = causal(*on_gpu, rate, chunk_size=rate * 4, feature_map=feature_map).cpu()
        report[f"causal rate {rate}"] = (got - expected).abs().max().item()
        decay = [0.9, 0.6]
        expected = naive(q, k, v, [rate] * heads, causal=True, feature_map=feature_map, block_decay=decay)
        got = causal(*on_gpu, rate, chunk_size=rate * 4, feature_map=feature_map,
                     block_decay=torch.tensor(decay, dtype=torch.float64, device=device)).cpu()
        report[f"causal rate {rate} with decay"] = (got - expected).abs().max().item()
    dense, rates, decay = ops["dense"], [1, 4], [0.9, 0.6]  # the dense form that inputs up to 256 tokens take
    got = dense.bidirectional_dense(*on_gpu, rates, mask.to(device), feature_map).cpu()
    expected = naive(q, k, v, rates, mask, feature_map=feature_map)
    report["dense bidirectional, rates 1 and 4"] = (got - expected).abs().max().item()
    got = dense.causal_dense(*on_gpu, rates, feature_map,
                             block_decay=torch.tensor(decay, dtype=torch.float64, device=device)).cpu()
    expected = naive(q, k, v, rates, causal=True, feature_map=feature_map, block_decay=decay)
    report["dense causal with decay"] = (got - expected).abs().max().item()
    report.update(recurrent_check(ops, q, k, v, feature_map, device))
    report.update(gradient_check(ops, q, k, v, mask, feature_map, device))
    return report


def recurrent_check(ops, q, k, v, feature_map, device):
    """The one-token step, position by position on the GPU, against the CPU reference."""
    recurrent = ops["recurrent"]
    rates = [1, 4]
    batch, heads, length, dim = q.shape
    expected = ops["naive"].naive_adamra_attention(q, k, v, rates, causal=True, feature_map=feature_map)
    report = {}
    for in_place in (False, True):  # generation advances the state in place
        state = recurrent.initial_state(batch, heads, dim, dim, q.dtype, device, 2 * dim)
        outputs = []
        for t in range(length):
            out, state = recurrent.causal_step(q[:, :, t].to(device), k[:, :, t].to(device), v[:, :, t].to(device),
                                               state, torch.tensor(rates, device=device), feature_map,
                                               in_place=in_place)
            outputs.append(out)
        got = torch.stack(outputs, dim=2).cpu()
        report[f"recurrent step, rates 1 and 4{', in place' if in_place else ''}"] = (got - expected).abs().max().item()
    return report


def gradient_check(ops, q, k, v, mask, feature_map, device):
    """Gradients of the fast ops on the GPU against autograd through the CPU reference."""
    report = {}
    weights = torch.randn(q.shape[:3] + (v.size(-1),), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for name in ("bidirectional", "causal"):
        cpu_inputs = [x.clone().requires_grad_() for x in (q, k, v)]
        gpu_inputs = [x.detach().to(device).requires_grad_() for x in (q, k, v)]
        if name == "bidirectional":
            expected = ops["naive"].naive_adamra_attention(*cpu_inputs, [4, 4], mask, feature_map=feature_map)
            got = ops["bidirectional"].bidirectional_attention(*gpu_inputs, 4, mask.to(device), feature_map=feature_map)
        else:
            expected = ops["naive"].naive_adamra_attention(*cpu_inputs, [4, 4], causal=True, feature_map=feature_map)
            got = ops["causal"].causal_attention(*gpu_inputs, 4, chunk_size=16, feature_map=feature_map)
        (expected * weights).sum().backward()
        (got * weights.to(device)).sum().backward()
        report[f"{name} gradients"] = max((a.grad - b.grad.cpu()).abs().max().item()
                                          for a, b in zip(cpu_inputs, gpu_inputs))
    return report


def precision_check(ops, device):
    """Relative error of bfloat16 and float32 inputs against float64, causal and bidirectional, T=2048."""
    feature_map = ops["feature_maps"].softmax_pair
    generator = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 8, 2048, 64, generator=generator, dtype=torch.float64).to(device) for _ in range(3))
    report = {}
    for name, run in (("bidirectional", lambda *x: ops["bidirectional"].bidirectional_attention(
                           *x, 4, feature_map=feature_map)),
                      ("causal", lambda *x: ops["causal"].causal_attention(*x, 4, feature_map=feature_map))):
        reference = run(q, k, v)
        for dtype in (torch.float32, torch.bfloat16):
            got = run(*(x.to(dtype) for x in (q, k, v))).double()
            report[f"{name} {str(dtype).split('.')[1]} relative error"] = (
                ((got - reference).norm() / reference.norm()).item())
    return report


def timed(function, repeats=5):
    """Median milliseconds of ``function()`` (forward + backward) and its peak memory in MB."""
    for _ in range(2):
        function()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2], (torch.cuda.max_memory_allocated() - base) / 2**20


def speed(ops, device, lengths):
    import torch.nn.functional as F

    feature_map = ops["feature_maps"].softmax_pair
    rows = []
    for length in lengths:
        q, k, v = (torch.randn(1, 8, length, 64, device=device, dtype=torch.bfloat16, requires_grad=True)
                   for _ in range(3))
        grad = torch.randn(1, 8, length, 64, device=device, dtype=torch.bfloat16)

        def backward_of(make):
            def run():
                out = make()
                out.backward(grad)
                for x in (q, k, v):
                    x.grad = None
            return run

        row = {"length": length}
        for name, make in (
            ("sdpa", lambda: F.scaled_dot_product_attention(q, k, v)),
            ("sdpa_causal", lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)),
            ("adamra_bidirectional", lambda: ops["bidirectional"].bidirectional_attention(
                q, k, v, 4, feature_map=feature_map)),
            ("adamra_causal", lambda: ops["causal"].causal_attention(q, k, v, 4, feature_map=feature_map)),
        ):
            try:
                row[name + "_ms"], row[name + "_mb"] = timed(backward_of(make))
            except torch.cuda.OutOfMemoryError:
                row[name + "_ms"] = row[name + "_mb"] = None
                torch.cuda.empty_cache()
        rows.append(row)
        cells = " ".join(f"{row[n + '_ms']:>9.2f}" if row[n + "_ms"] is not None else f"{'oom':>9}"
                         for n in ("sdpa", "sdpa_causal", "adamra_bidirectional", "adamra_causal"))
        print(f"{length:>6} {cells}", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", default="1024,4096,16384,65536")
    parser.add_argument("--out", default=os.path.join(REPO_ROOT, "results", "gpu_check.json"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("error: no CUDA device visible to torch; this check needs a GPU", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    ops = load_ops()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    errors = correctness(ops, device)
    worst = max(errors.values())
    for name, error in errors.items():
        print(f"  {name:<36} max |GPU - CPU reference| = {error:.2e}")
    precision = precision_check(ops, device)
    for name, error in precision.items():
        print(f"  {name:<36} {error:.2e}")
    print("\nforward + backward ms, B=1 H=8 head 64, bfloat16 (rate 4 for AdaMRA, Hedgehog features):")
    print(f"{'length':>6} {'sdpa':>9} {'sdpa_c':>9} {'ada_bi':>9} {'ada_c':>9}")
    rows = speed(ops, device, [int(x) for x in args.lengths.split(",")])
    record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": torch.cuda.get_device_name(),
              "torch": torch.__version__, "float64_errors": errors, "precision": precision, "speed": rows}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(record, handle, indent=1)
    print(f"wrote {args.out}")
    if worst > 1e-9:
        print(f"error: a GPU result differs from the CPU reference by {worst:.2e} (> 1e-9)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
