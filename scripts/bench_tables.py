"""Markdown tables from the JSON that bench_attention.py and bench_generate.py write.

usage: python scripts/bench_tables.py docs/figures/bench_attention.json [docs/figures/bench_generate.json]
       python scripts/bench_tables.py --before BEFORE.json AFTER.json   (two bench_attention.py runs)
"""

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_generate import REPORT_POSITIONS, window_median  # noqa: E402


def header(record):
    return (f"Command: `{record['command']}`; {record['date']}; CPU {record['cpu']}; "
            f"{record['threads']} threads; torch {record['torch']}.")


def attention_tables(record):
    results = record["results"]
    methods = list(results)
    lengths = list(next(iter(results.values())))
    print(header(record))
    print()
    print("Forward + backward time (ms):\n")
    print("| n | " + " | ".join(methods) + " |")
    print("|---:|" + "---:|" * len(methods))
    for n in lengths:
        cells = [f"{results[m][n]['time_s'] * 1000:.1f}" if "time_s" in results[m][n] else results[m][n]["skipped"]
                 for m in methods]
        print(f"| {n} | " + " | ".join(cells) + " |")
    print("\nPeak memory growth of the step (MB):\n")
    print("| n | " + " | ".join(methods) + " |")
    print("|---:|" + "---:|" * len(methods))
    for n in lengths:
        cells = [f"{results[m][n]['peak_mb']:.0f}" if "peak_mb" in results[m][n] else "-" for m in methods]
        print(f"| {n} | " + " | ".join(cells) + " |")
    print("\nRatios:\n")
    print("| n | time mha / adamra | memory mha / adamra | time sdpa / adamra | causal / bidirectional time |")
    print("|---:|---:|---:|---:|---:|")
    for n in lengths:
        mha, sdpa, ada, causal = (results[m][n] for m in ("mha", "sdpa", "adamra", "adamra_causal"))
        def ratio(a, b, key):
            return f"{a[key] / b[key]:.2f}" if key in a and key in b else "-"
        print(f"| {n} | {ratio(mha, ada, 'time_s')} | {ratio(mha, ada, 'peak_mb')} | {ratio(sdpa, ada, 'time_s')} "
              f"| {ratio(causal, ada, 'time_s')} |")
    core = record["core_gflops"]
    print(f"\nfp32 matmul (2048 x 2048): {record['matmul_gflops']:.1f} GFLOP/s. AdaMRA core ops at "
          f"n = {record['core_length']}: bidirectional {core['bidirectional']:.1f} GFLOP/s "
          f"({100 * core['bidirectional'] / record['matmul_gflops']:.0f}% of matmul), causal "
          f"{core['causal']:.1f} GFLOP/s ({100 * core['causal'] / record['matmul_gflops']:.0f}%).")


def generate_tables(record):
    print(header(record))
    print()
    sweep = record["results"]["output_sweep"]
    print("| model | beam | output tokens | tokens/s | peak MB | " +
          " | ".join(f"step ms @{p}" for p in REPORT_POSITIONS) + " |")
    print("|---|---:|---:|---:|---:|" + "---:|" * len(REPORT_POSITIONS))
    for key, points in sweep.items():
        model, beam = key.split("|beam")
        for point in points:
            steps = [window_median(point["step_ms"], p) for p in REPORT_POSITIONS]
            print(f"| {model} | {beam} | {point['output_len']} | {point['tokens_per_s']:.1f} | {point['peak_mb']:.0f} | "
                  + " | ".join("-" if s is None else f"{s:.2f}" for s in steps) + " |")
    print("\nSource-length sweep (mean decoder step time, ms):\n")
    sources = record["results"]["source_sweep"]
    lengths = [p["source_len"] for p in next(iter(sources.values()))]
    print("| model | " + " | ".join(f"source {n}" for n in lengths) + " |")
    print("|---|" + "---:|" * len(lengths))
    for model, points in sources.items():
        print(f"| {model} | " + " | ".join(f"{statistics.mean(p['step_ms'][1:]):.2f}" for p in points) + " |")


def before_after_table(before, after):
    """Times of our modules and their ratios to fairseq's MHA in two bench_attention.py runs (the lengths of both)."""
    print(f"Before: {header(before)}  \nAfter: {header(after)}\n")
    columns = ("linear", "adamra", "adamra_causal")
    print("| n | " + " | ".join(f"{m} ms before / after" for m in columns)
          + " | mha / adamra before / after | mha_causal / adamra_causal before / after |")
    print("|---:|" + "---:|" * (len(columns) + 2))
    old, new = before["results"], after["results"]
    for n in (n for n in new["mha"] if n in old["mha"]):
        def pair(values):
            return " / ".join(f"{v:.2f}" if v is not None else "-" for v in values)

        def ratio(results, a, b):
            x, y = results[a][n], results[b][n]
            return x["time_s"] / y["time_s"] if "time_s" in x and "time_s" in y else None

        def ms(results, method):
            point = results[method][n]
            return point["time_s"] * 1000 if "time_s" in point else None

        cells = [" / ".join(f"{v:.1f}" if v is not None else "-" for v in (ms(old, m), ms(new, m))) for m in columns]
        cells.append(pair((ratio(old, "mha", "adamra"), ratio(new, "mha", "adamra"))))
        cells.append(pair((ratio(old, "mha_causal", "adamra_causal"), ratio(new, "mha_causal", "adamra_causal"))))
        print(f"| {n} | " + " | ".join(cells) + " |")


def load(path):
    with open(path) as handle:
        return json.load(handle)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", metavar="JSON")
    parser.add_argument("--before", metavar="JSON",
                        help="an earlier bench_attention.py run: print a before/after table against the one given")
    args = parser.parse_args()
    if args.before:
        if len(args.paths) != 1:
            parser.error("--before compares with exactly one later bench_attention.py JSON")
        before_after_table(load(args.before), load(args.paths[0]))
        return
    for path in args.paths:
        record = load(path)
        if "core_gflops" in record:
            attention_tables(record)
        else:
            generate_tables(record)
        print()


if __name__ == "__main__":
    main()
