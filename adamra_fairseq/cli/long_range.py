"""Long-input classification: AdaMRA variants against the vanilla transformer at equal wall-clock.

usage: adamra-long-range --data-bin DIR [--models transformer,adamra,one-rate,original,ladder]
                         [--variant NAME="--adamra-... flags" ...] [--seeds 1,2]
                         [--max-minutes M | --max-update N] [--size tiny|small] [--out DIR]
       (also python -m adamra_fairseq.cli.long_range)

DIR is a data-bin of examples/long_range/prepare-listops.sh or
prepare-help-modules.sh (its task.json gives the classes and the longest
example). Each model trains with fairseq-train --task sentence_prediction
(the first token <s> classifies; best checkpoint by validation accuracy),
then fairseq-validate scores that checkpoint on the test split. The report
gives test accuracy (mean and spread over seeds, and per seed), the
always-the-most-common-training-label baseline, updates, training tokens/s
and peak memory (resident set of the training process); report.md,
results.json and accuracy_curves.png (validation accuracy against
training minutes) land in --out. Finished runs with the same command are
reused, as in adamra-compare.

Models: transformer (fairseq's RoBERTa with the same sizes), adamra (the
default AdaMRA), one-rate (--adamra-rates 1), original (--adamra-preset
original), ladder (--adamra-rates 1,4,16,64), top1 (--adamra-routing top1),
plus any --variant.
"""

import argparse
import json
import os
import re
import shlex
import sys
import time
from collections import Counter
from datetime import datetime, timezone

from .compare import _FLOAT, REPO_ROOT, fail, fairseq_command, fmt, mean_spread, parse_training_log, run_step
from .progress import TrainingWatcher

ARCHS = {"tiny": ("roberta_adamra_tiny_baseline", "adamra_roberta_tiny"),
         "small": ("roberta_adamra_small_baseline", "adamra_roberta_small")}
# AdaMRA variants by name: the flags they add to the default AdaMRA classifier (None: the vanilla transformer).
MODELS = {
    "transformer": None,
    "adamra": [],
    "one-rate": ["--adamra-rates", "1"],
    "original": ["--adamra-preset", "original"],
    "ladder": ["--adamra-rates", "1,4,16,64"],
    "top1": ["--adamra-routing", "top1"],
}


def read_task(data_bin):
    """``{"num_classes": C, "max_positions": N}`` from a long-range data-bin; one-line error if it is not one."""
    path = os.path.join(data_bin, "task.json")
    if not os.path.isfile(path) or not os.path.isdir(os.path.join(data_bin, "input0")):
        fail(f"{data_bin} is not a classification data-bin of this project (no task.json or input0/): build one "
             "with examples/long_range/prepare-listops.sh or prepare-help-modules.sh")
    with open(path) as handle:
        return json.load(handle)


def label_counts(data_bin, split):
    """How often each label occurs in a binarised split (``label/SPLIT``)."""
    from fairseq.data import Dictionary, data_utils

    dictionary = Dictionary.load(os.path.join(data_bin, "label", "dict.txt"))
    dataset = data_utils.load_indexed_dataset(os.path.join(data_bin, "label", split), dictionary)
    if dataset is None:
        fail(f"{data_bin}/label has no {split} split: rebuild the data-bin with its examples/long_range recipe")
    return Counter(dictionary[int(dataset[index][0])] for index in range(len(dataset)))


def majority_baseline(data_bin):
    """Test accuracy (percent) of always answering the most common training label."""
    common = label_counts(data_bin, "train").most_common(1)[0][0]
    test = label_counts(data_bin, "test")
    return 100 * test[common] / sum(test.values()), common


def test_accuracy(log_path):
    """Accuracy from fairseq-validate's ``valid on 'test' subset`` line, or None."""
    with open(log_path, errors="replace") as handle:
        for line in handle:
            found = re.search(r"valid on 'test' subset .*\| accuracy " + _FLOAT, line)
            if found:
                return float(found.group(1))
    return None


def parse_variants(items):
    """``NAME=FLAGS`` strings -> {name: [flags]}; only --adamra-* flags."""
    variants = {}
    for item in items:
        name, _, flags = item.partition("=")
        flags = shlex.split(flags)
        if not name or not flags or not flags[0].startswith("--adamra-") or name in MODELS:
            fail(f"--variant {item!r} is not NAME=\"--adamra-... flags\" with a new NAME (taken: {', '.join(MODELS)})")
        stray = [flag for flag in flags if flag.startswith("-") and not flag.startswith("--adamra-")]
        if stray:
            fail(f"--variant {name}: only --adamra-* flags may vary between models, not {' '.join(stray)}")
        variants[name] = flags
    return variants


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-bin", required=True, help="from examples/long_range/prepare-*.sh")
    parser.add_argument("--models", default="transformer,adamra,one-rate,original,ladder",
                        help=f"comma list of {', '.join(MODELS)} and --variant names (default %(default)s)")
    parser.add_argument("--variant", action="append", default=[], metavar='NAME="FLAGS"',
                        help="an AdaMRA variant: the default AdaMRA classifier plus these --adamra-* flags; repeatable")
    parser.add_argument("--seeds", default="1", help="comma list of seeds")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--max-minutes", type=float, help="equal wall-clock training per model (default 8)")
    budget.add_argument("--max-update", type=int, help="equal updates per model instead")
    parser.add_argument("--size", choices=sorted(ARCHS), default="tiny")
    parser.add_argument("--lr", default="1e-3")
    parser.add_argument("--warmup-updates", default="100")
    parser.add_argument("--dropout", default="0.1")
    parser.add_argument("--max-tokens", type=int, help="tokens per batch (default 16384, at least the longest example)")
    parser.add_argument("--validate-interval-updates", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="threads of each training (default 1)")
    parser.add_argument("--out", required=True, help="results folder")
    args = parser.parse_args()

    task = read_task(args.data_bin)
    variants = {**MODELS, **parse_variants(args.variant)}
    models = [model for model in args.models.split(",") if model]
    unknown = [model for model in models if model not in variants]
    if not models or unknown:
        fail(f"--models {args.models!r}: unknown {', '.join(unknown) or 'empty list'}; choose from "
             f"{', '.join(variants)}")
    try:
        seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        fail(f"--seeds {args.seeds!r} is not a comma list of integers")
    if args.max_minutes is not None and args.max_minutes <= 0:
        fail(f"--max-minutes {args.max_minutes} must be > 0")
    if args.max_update is not None and args.max_update < 1:
        fail(f"--max-update {args.max_update} must be >= 1")
    if args.validate_interval_updates < 1:
        fail(f"--validate-interval-updates {args.validate_interval_updates} must be >= 1")
    max_positions = task["max_positions"]
    max_tokens = args.max_tokens or max(16384, max_positions)
    if max_tokens < max_positions:
        fail(f"--max-tokens {max_tokens} cannot hold the longest example ({max_positions} tokens): use at least that")
    minutes = (args.max_minutes or 8.0) if args.max_update is None else None
    budget_flags = (["--stop-time-hours", str(minutes / 60), "--max-update", "1000000"] if minutes
                    else ["--max-update", str(args.max_update)])
    budget_text = f"{minutes:g} minutes" if minutes else f"{args.max_update} updates"
    data_bin, out = os.path.abspath(args.data_bin), os.path.abspath(args.out)
    task_flags = ["--task", "sentence_prediction", "--criterion", "sentence_prediction", "--init-token", "0",
                  "--num-classes", str(task["num_classes"]), "--max-positions", str(max_positions)]
    # batches of any size: with fairseq's default multiple of 8, batch_by_size drops a last batch that is not one
    # (fairseq issue 5036), so validation and test would skip up to 7 examples
    common = [data_bin, "--user-dir", os.path.join(REPO_ROOT, "adamra_fairseq"), "--cpu", *task_flags,
              "--max-tokens", str(max_tokens), "--required-batch-size-multiple", "1", "--log-format", "simple"]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    baseline, common_label = majority_baseline(data_bin)
    print(f"{len(models)} models x seeds {seeds} on {data_bin}, {budget_text} each, {args.size} sizes, "
          f"{args.threads} threads; results in {out}", flush=True)

    runs = {model: {} for model in models}
    for seed in seeds:
        for model in models:
            arch = ARCHS[args.size][0 if variants[model] is None else 1]
            save_dir = os.path.join(out, model, f"seed{seed}")
            os.makedirs(save_dir, exist_ok=True)
            print(f"training {model} ({arch} {' '.join(variants[model] or [])}) seed {seed}", flush=True)
            train = [fairseq_command("fairseq-train"), *common, "--save-dir", save_dir, "--arch", arch,
                     "--seed", str(seed), "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", args.lr,
                     "--lr-scheduler", "inverse_sqrt", "--warmup-updates", args.warmup_updates,
                     "--dropout", args.dropout, "--weight-decay", "0.01", "--clip-norm", "1.0",
                     "--validate-interval-updates", str(args.validate_interval_updates),
                     "--save-interval-updates", str(args.validate_interval_updates), "--keep-interval-updates", "1",
                     "--no-epoch-checkpoints", "--best-checkpoint-metric", "accuracy",
                     "--maximize-best-checkpoint-metric", "--log-interval", "20", *budget_flags,
                     *(variants[model] or [])]
            log_path = os.path.join(save_dir, "train.log")
            watcher = TrainingWatcher(log_path, args.max_update, minutes)
            measured = run_step(save_dir, "train", train, log_path, env, f"training {model} seed {seed}",
                                watcher=watcher)
            test = [fairseq_command("fairseq-validate"), *common, "--path",
                    os.path.join(save_dir, "checkpoint_best.pt"), "--valid-subset", "test"]
            test_log = os.path.join(save_dir, "test.log")
            run_step(save_dir, "test", test, test_log, env, f"testing {model} seed {seed}")
            curve = parse_training_log(log_path, "accuracy")
            record = {"arch": arch, "flags": variants[model] or [], "test_accuracy": test_accuracy(test_log),
                      "best_valid_accuracy": max((value for _, value in curve["valid_accuracy"]), default=None),
                      "train_seconds": measured["seconds"], "train_peak_mb": measured["peak_mb"], **curve}
            runs[model][seed] = record
            print(f"      test accuracy {fmt(record['test_accuracy'], None, 1)} after {record['updates']} updates",
                  flush=True)
    write_report(out, args, runs, seeds, budget_text, baseline, common_label)


def write_report(out, args, runs, seeds, budget_text, baseline, common_label):
    lines = [f"# Long-input classification ({args.size} sizes)", "",
             f"Command: `adamra-long-range {shlex.join(sys.argv[1:])}`  ",
             f"Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d')}; data: `{args.data_bin}`; seeds {seeds}; "
             f"budget {budget_text} each; {args.threads} threads.", "",
             "| model | test accuracy | per seed | best valid accuracy | updates | train tokens/s | train peak MB |",
             "|---|---:|---|---:|---:|---:|---:|"]
    summary = {}
    for model, by_seed in runs.items():
        records = [by_seed[seed] for seed in seeds]
        accuracy = mean_spread([r["test_accuracy"] for r in records])
        summary[model] = {"test_accuracy": accuracy, "train_wps": mean_spread([r["train_wps"] for r in records]),
                          "train_peak_mb": mean_spread([r["train_peak_mb"] for r in records]),
                          "updates": mean_spread([r["updates"] for r in records])}
        lines.append(f"| {model} | {fmt(*accuracy, digits=1)} | "
                     + " / ".join(fmt(r["test_accuracy"], None, 1) for r in records)
                     + f" | {fmt(*mean_spread([r['best_valid_accuracy'] for r in records]), digits=1)} "
                     f"| {fmt(*summary[model]['updates'], digits=0)} | {fmt(*summary[model]['train_wps'], digits=0)} "
                     f"| {fmt(*summary[model]['train_peak_mb'], digits=0)} |")
    lines += ["", f"Always answering the most common training label ({common_label}): {baseline:.1f}% on test.",
              "Spread: sample standard deviation over seeds. Test accuracy is that of the checkpoint with the best "
              "validation accuracy."]
    report = "\n".join(lines) + "\n"
    with open(os.path.join(out, "report.md"), "w") as handle:
        handle.write(report)
    with open(os.path.join(out, "results.json"), "w") as handle:
        json.dump({"command": sys.argv, "date": time.strftime("%Y-%m-%d"), "budget": budget_text,
                   "majority_baseline": baseline, "runs": runs, "summary": summary}, handle, indent=1)
    plot(out, runs)
    print("\n" + report)
    print(f"wrote {out}/report.md, results.json, accuracy_curves.png")


def plot(out, runs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.2))
    for index, (model, by_seed) in enumerate(runs.items()):
        for number, (seed, record) in enumerate(sorted(by_seed.items())):
            if record["valid_accuracy_minutes"]:
                times, values = zip(*record["valid_accuracy_minutes"])
                axis.plot(times, values, color=f"C{index}", linestyle=("-", "--", ":")[number % 3],
                          label=f"{model} seed {seed}")
    axis.set(xlabel="training minutes", ylabel="validation accuracy (%)", title="accuracy against training time")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(os.path.join(out, "accuracy_curves.png"), dpi=110)


if __name__ == "__main__":
    main()
