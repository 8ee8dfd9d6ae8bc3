"""Decoding speed of trained checkpoints on a real test set: fairseq-generate, beam 1 and beam 5.

usage: python scripts/benchmarks/bench_decode.py [--data-bin DIR] [--subset test] [--beams 1,5] [--threads 1]
                                      [--repeats 1] [--out results/bench_decode.json] NAME=CHECKPOINT ...

Every run is one ``fairseq-generate`` of the whole subset (the settings of
scripts/generate.sh: ``--max-tokens 4096``, ``--max-len-a 1.2 --max-len-b 10``,
BPE removed) in its own process, one after the other (nothing else should
run meanwhile); runs alternate between checkpoints and are repeated
``--repeats`` times. The speed is fairseq's own tokens/s (generated tokens
over the time spent in beam search), the memory the process's peak resident
set; the hypotheses go to ``--out``'s folder, never next to the checkpoints.
The table gives medians and the ratio to the first checkpoint named.
"""

import argparse
import os
import statistics
import sys
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the checkout
from adamra_fairseq.cli.compare import (  # noqa: E402
    REPO_ROOT, fail, generate_command, generation_speed, print_and_save_table, require_data_bin, require_json_out,
    run_measured,
)


def decode(checkpoint, beam, args, out_prefix, env):
    """(tokens/s, peak MB) of one fairseq-generate run; hypotheses in ``out_prefix``.txt."""
    command = generate_command(args.data_bin, checkpoint, args.subset, beam, True, "--results-path", out_prefix)
    code, _, peak_mb = run_measured(command, out_prefix + ".log", env)
    speed = generation_speed(out_prefix + ".log")
    if code != 0 or speed is None:
        fail(f"fairseq-generate of {checkpoint} failed (exit {code}); see {out_prefix}.log")
    return speed, peak_mb


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+", metavar="NAME=CHECKPOINT")
    parser.add_argument("--data-bin", default=os.path.join(REPO_ROOT, "data", "debian-de-en", "data-bin"))
    parser.add_argument("--subset", default="test")
    parser.add_argument("--beams", default="1,5", help="comma list of beam sizes")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", default=os.path.join(REPO_ROOT, "results", "bench_decode.json"))
    args = parser.parse_args()
    require_json_out(args.out)
    require_data_bin(args.data_bin)
    try:
        beams = [int(beam) for beam in args.beams.split(",")]
    except ValueError:
        fail(f"--beams {args.beams!r} is not a comma list of integers, e.g. 1,5")
    if not beams or min(beams) < 1 or args.repeats < 1 or args.threads < 1:
        fail("--beams, --repeats and --threads must be positive")
    models = []
    for item in args.checkpoints:
        name, sep, checkpoint = item.partition("=")
        if not sep or not name or "/" in name:
            fail(f"{item!r} is not NAME=CHECKPOINT (NAME without '/')")
        if not os.path.isfile(checkpoint):
            fail(f"missing checkpoint {checkpoint}")
        models.append((name, os.path.abspath(checkpoint)))

    work = os.path.splitext(os.path.abspath(args.out))[0]
    os.makedirs(work, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    results = {name: {"checkpoint": path, "beams": {}} for name, path in models}
    for beam in beams:
        for repeat in range(args.repeats):
            for name, path in models:
                speed, peak = decode(path, beam, args, os.path.join(work, f"{name}-beam{beam}-{repeat}"), env)
                record = results[name]["beams"].setdefault(str(beam), {"tokens_per_s": [], "peak_mb": []})
                record["tokens_per_s"].append(speed)
                record["peak_mb"].append(peak)
                print(f"{name:>16} beam {beam} run {repeat + 1}: {speed:8.0f} tokens/s  {peak:6.0f} MB peak",
                      flush=True)

    first = models[0][0]
    lines = [f"{args.subset} of {args.data_bin}; {args.repeats} run(s) each, {args.threads} thread(s); "
             f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}", "",
             "| model | beam | tokens/s | vs " + first + " | peak MB |", "|---|---:|---:|---:|---:|"]
    for beam in beams:
        base = statistics.median(results[first]["beams"][str(beam)]["tokens_per_s"])
        for name, _ in models:
            record = results[name]["beams"][str(beam)]
            speed = statistics.median(record["tokens_per_s"])
            record.update(median_tokens_per_s=speed, ratio=speed / base)
            lines.append(f"| {name} | {beam} | {speed:.0f} | {speed / base:.2f}x | "
                         f"{statistics.median(record['peak_mb']):.0f} |")
    print_and_save_table(lines, args.out, {"subset": args.subset, "threads": args.threads, "results": results})


if __name__ == "__main__":
    main()
