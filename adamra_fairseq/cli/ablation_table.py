"""One markdown table over several ``adamra-compare`` result folders (ablations).

usage: adamra-ablation-table LABEL=DIR [LABEL=DIR ...] [--at 600] [--json PATH] [--plot PNG]

Each DIR is a ``--out`` folder of adamra-compare. For every model and seed found
under it (``DIR/<model>/seed<N>/``), the table gives the validation loss at
update ``--at`` (a point every run reached, so runs stopped early still
compare) and at the last validation, the test-set BLEU/chrF of the finished
generations, the mean training words/s of the logged intervals (comparable
only between runs that had the machine to themselves) and the training
process's peak resident memory. Runs that did
not finish show ``-`` where a number is missing. Rows are ``LABEL/model``;
the same transformer run copied into several folders appears once.
"""

import argparse
import glob
import json
import os
import statistics
import sys

from .compare import fmt, mean_spread, parse_training_log


def read_run(seed_dir):
    """Validation curve, test scores by test-set name and training peak of one ``<model>/seed<N>`` folder."""
    log = parse_training_log(os.path.join(seed_dir, "train.log"))
    tests = {}
    for path in sorted(glob.glob(os.path.join(seed_dir, "generate-*.json"))):
        if path.endswith(".measure.json"):
            continue
        with open(path) as handle:
            scores = json.load(handle)
        tests[scores["test_set"]] = scores
    peak = None
    measure = os.path.join(seed_dir, "train.measure.json")
    if os.path.isfile(measure):
        with open(measure) as handle:
            peak = json.load(handle)["peak_mb"]
    return {"valid_loss": dict(log["valid_loss"]), "updates": log["updates"], "tests": tests, "peak_mb": peak,
            "train_wps": log["train_wps"]}


def fmt_values(values, digits):
    """Mean ± spread of ``values`` as adamra-compare's tables write it (``-`` when there are none)."""
    return fmt(*mean_spread(values), digits=digits)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", metavar="LABEL=DIR")
    parser.add_argument("--at", type=int, default=600, help="update at which every run's validation loss is shown")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--plot", help="also plot every row's validation loss (mean over its seeds) to this PNG")
    args = parser.parse_args()

    rows, seen, test_sets = [], {}, []
    for item in args.folders:
        label, sep, folder = item.partition("=")
        if not sep or not os.path.isdir(folder):
            sys.exit(f"error: {item!r} is not LABEL=DIR with an existing DIR (an adamra-compare --out folder)")
        for model_dir in sorted(glob.glob(os.path.join(folder, "*", ""))):
            model = os.path.basename(os.path.dirname(model_dir))
            runs = {}
            for seed_dir in sorted(glob.glob(os.path.join(model_dir, "seed*"))):
                if os.path.isfile(os.path.join(seed_dir, "train.log")):
                    runs[os.path.basename(seed_dir)[4:]] = read_run(seed_dir)
            if not runs:
                continue
            key = json.dumps(runs, sort_keys=True)  # copied baselines are identical: show them once
            if key in seen:
                continue
            seen[key] = f"{label}/{model}"
            for run in runs.values():
                test_sets += [name for name in run["tests"] if name not in test_sets]
            rows.append({"row": f"{label}/{model}", "seeds": sorted(runs, key=int), "runs": runs})
    if not rows:
        sys.exit("error: no training runs found under the given folders (expected DIR/<model>/seed<N>/train.log)")

    header = (["run", "seeds", f"valid loss @{args.at}", "last valid loss (update)"]
              + [f"{name} BLEU / chrF / length ratio" for name in test_sets] + ["train words/s", "train peak MB"])
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    for row in rows:
        runs = list(row["runs"].values())
        last = [max(run["valid_loss"]) for run in runs if run["valid_loss"]]
        cells = [row["row"], ",".join(row["seeds"]),
                 fmt_values([run["valid_loss"].get(args.at) for run in runs], 3),
                 (fmt_values([run["valid_loss"][step] for run, step in zip(runs, last)], 3)
                  + f" ({statistics.mean(last):.0f})" if last else "-")]
        for name in test_sets:
            scores = [run["tests"].get(name) for run in runs]
            complete = all(scores)
            cells.append(f"{fmt_values([s['bleu'] for s in scores], 2)} / {fmt_values([s['chrf'] for s in scores], 2)}"
                         f" / {fmt_values([s.get('length_ratio') for s in scores], 3)}" if complete else "-")
        cells.append(fmt_values([run.get("train_wps") for run in runs], 0))
        cells.append(fmt_values([run["peak_mb"] for run in runs], 0))
        lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"command": sys.argv, "rows": rows}, handle, indent=1)
    if args.plot:
        plot_curves(rows, args.plot)


def plot_curves(rows, path):
    """Validation loss against updates, one line per row (mean over the seeds that reached each point)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    colours = plt.get_cmap("tab20").colors
    for index, row in enumerate(rows):
        runs = list(row["runs"].values())
        steps = sorted({step for run in runs for step in run["valid_loss"]})
        means = [statistics.mean(run["valid_loss"][step] for run in runs if step in run["valid_loss"])
                 for step in steps]
        axis.plot(steps, means, marker="o", markersize=3, color=colours[(2 * index) % 20 + index // 10 % 2],
                  linestyle="-" if row["row"].endswith("/adamra") else "--",
                  label=f"{row['row']} (seeds {','.join(row['seeds'])})")
    axis.set(xlabel="updates", ylabel="validation loss (label-smoothed, base 2)", title="validation loss")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
