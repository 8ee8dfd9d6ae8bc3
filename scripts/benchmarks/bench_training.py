"""Training speed and memory of whole models at MT lengths: the transformer against AdaMRA variants.

usage: python scripts/benchmarks/bench_training.py [--data-bin DIR] [--size tiny|small] [--heads H] [--updates N]
                                        [--repeats R] [--out PATH.json] [NAME="--adamra-... flags" ...]

Each run is ``fairseq-train`` (scripts/train.sh, the settings of
adamra-compare) for ``--updates`` updates on the real training data,
without validation or checkpoints, in its own process, one after the other
(nothing else should run meanwhile). The speed is fairseq's words/s (target
tokens per second) of the logged intervals after the first (warm-up); the
memory is the process's peak resident set. ``transformer`` and ``adamra``
(the architecture's defaults) are always measured; every NAME="flags"
argument adds an AdaMRA variant. Runs alternate between models, and each is
repeated ``--repeats`` times; the table gives the median and the ratio to the
transformer.
"""

import argparse
import os
import shlex
import statistics
import sys
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the checkout
from adamra_fairseq.cli.compare import (  # noqa: E402
    ARCHS, REPO_ROOT, fail, print_and_save_table, require_data_bin, require_json_out, run_measured,
)


def train_speed(arch, flags, args, log_path, env):
    """(median words/s of the logged intervals after the first, peak MB) of one short fairseq-train run."""
    command = ["bash", "scripts/train.sh", args.data_bin, os.path.join(os.path.dirname(log_path), "unused"),
               "--arch", arch, "--seed", "1", "--lr", "2e-3", "--warmup-updates", "200", "--dropout", "0.1",
               "--max-tokens", "4096", "--max-update", str(args.updates), "--disable-validation", "--no-save",
               "--log-interval", str(args.log_interval)]
    if args.heads:
        command += ["--encoder-attention-heads", str(args.heads), "--decoder-attention-heads", str(args.heads)]
    code, _, peak_mb = run_measured(command + flags, log_path, env)
    if code != 0:
        fail(f"{arch} {' '.join(flags)} failed (exit {code}); see {log_path}")
    speeds = []
    with open(log_path, errors="replace") as handle:
        for line in handle:
            if "train_inner" in line and "wps=" in line:
                speeds.append(float(line.split("wps=")[1].split(",")[0]))
    if len(speeds) < 2:
        fail(f"{log_path} logged fewer than 2 intervals: raise --updates or lower --log-interval")
    return statistics.median(speeds[1:]), peak_mb


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("variants", nargs="*", metavar='NAME="FLAGS"')
    parser.add_argument("--data-bin", default=os.path.join(REPO_ROOT, "data", "debian-de-en", "data-bin"))
    parser.add_argument("--size", choices=("tiny", "small"), default="small")
    parser.add_argument("--heads", type=int)
    parser.add_argument("--updates", type=int, default=60)
    parser.add_argument("--log-interval", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(REPO_ROOT, "results", "bench_training.json"))
    args = parser.parse_args()
    require_json_out(args.out)
    require_data_bin(args.data_bin)
    if args.updates < 2 * args.log_interval:
        fail(f"--updates {args.updates} must be at least twice --log-interval {args.log_interval}")
    runs = [("transformer", ARCHS[args.size]["transformer"], []), ("adamra", ARCHS[args.size]["adamra"], [])]
    for item in args.variants:
        name, sep, flags = item.partition("=")
        if not sep or not name:
            fail(f"{item!r} is not NAME=\"--adamra-... flags\"")
        runs.append((name, ARCHS[args.size]["adamra"], shlex.split(flags)))

    work = os.path.splitext(os.path.abspath(args.out))[0]
    os.makedirs(work, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    results = {name: {"flags": flags, "words_per_s": [], "peak_mb": []} for name, _, flags in runs}
    for repeat in range(args.repeats):
        for name, arch, flags in runs:
            speed, peak = train_speed(arch, flags, args, os.path.join(work, f"{name}-{repeat}.log"), env)
            results[name]["words_per_s"].append(speed)
            results[name]["peak_mb"].append(peak)
            print(f"{name:>14} run {repeat + 1}: {speed:8.0f} words/s  {peak:6.0f} MB peak", flush=True)

    base = statistics.median(results["transformer"]["words_per_s"])
    lines = [f"{args.size} sizes{f', {args.heads} heads' if args.heads else ''}; {args.updates} updates per run, "
             f"{args.repeats} run(s) each, {args.threads} threads; "
             f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}", "",
             "| model | flags | train words/s | vs transformer | peak MB |", "|---|---|---:|---:|---:|"]
    for name, record in results.items():
        speed = statistics.median(record["words_per_s"])
        record.update(median_words_per_s=speed, ratio=speed / base)
        lines.append(f"| {name} | {' '.join(record['flags']) or '-'} | {speed:.0f} | {speed / base:.2f}x "
                     f"| {statistics.median(record['peak_mb']):.0f} |")
    print_and_save_table(lines, args.out, {"size": args.size, "heads": args.heads, "updates": args.updates,
                                           "threads": args.threads, "results": results})


if __name__ == "__main__":
    main()
