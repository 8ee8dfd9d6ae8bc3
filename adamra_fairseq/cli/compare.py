"""AdaMRA against the vanilla transformer on the same data, sizes, optimiser, schedule, budget and seeds.

usage: adamra-compare [--data-bin DIR] [--seeds 1,2] [--max-update N | --max-minutes M]
                      [--size tiny|small|iwslt] [--heads H] [--lr LR] [--out DIR]
                      [--finetune-from DIR] [--init-from MODEL=DIR ...]
                      [--adamra-* flags of the model ...]
       (also python -m adamra_fairseq.cli.compare, or python scripts/compare.py from a checkout)

For each seed, trains ``transformer`` and ``adamra_transformer`` (same sizes)
with scripts/train.sh, generates every test subset of the data-bin with
scripts/generate.sh (beam 5) and reports sacreBLEU BLEU and chrF (mean and
spread over seeds) per test set, training words/s, generation tokens/s,
peak memory (resident set of the training / generation process) and the
validation-loss curves. Writes report.md, results.json, loss_curves.png and
bleu_per_seed.png under --out. Re-running with the same --out reuses every
finished training and generation (each leaves a *.measure.json when done)
and continues an interrupted training from its checkpoint_last.pt; a
finished run trained with other flags is never reused (the script stops).

Every ``--adamra-*`` flag (e.g. ``--adamra-feature-map hedgehog
--adamra-cross-rates 1``) goes to the AdaMRA model's training unchanged.

On a document corpus (``prepare-debian-de-en.sh --doc-max-tokens N``; its
``preprocessing.json`` names the paragraph separator and N) both models get
position limits above N and batches of at least N + 16 tokens, and the
report adds the scores of the paragraphs split back out of each segment and
of each segment-length bucket.

``--init-from MODEL=DIR`` (repeatable; DIR a finished adamra-compare folder on
data with the same vocabulary, e.g. the sentence corpus for its document
corpus) starts each seed's MODEL from DIR's trained MODEL of that seed
(``--finetune-from-model``: weights only, a fresh optimiser and schedule).

``--finetune-from DIR`` (a finished adamra-compare folder) skips training the
transformer: each seed's AdaMRA model starts from DIR's trained transformer
of that seed (converted with ``python -m adamra_fairseq.convert``) and is
fine-tuned for the given budget; the report then compares it with its parent.
"""

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone

from .progress import GenerationWatcher, Reporter, TrainingWatcher

# The checkout this package was installed from (pip install -e .): the recipes in scripts/ live there.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Peak learning rate by model size, where --lr is not given.
DEFAULT_LR = {"tiny": "2e-3", "small": "1e-3", "iwslt": "5e-4"}
ARCHS = {
    "tiny": {"transformer": "transformer_adamra_tiny_baseline", "adamra": "adamra_transformer_tiny"},
    "small": {"transformer": "transformer_adamra_small_baseline", "adamra": "adamra_transformer_small"},
    "iwslt": {"transformer": "transformer_iwslt_de_en", "adamra": "adamra_transformer_iwslt_de_en"},
}
_FLOAT = r"([0-9.eE+-]+)"


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def fairseq_command(name):
    """A fairseq CLI (``fairseq-generate``, ...) next to this Python, so that a virtual environment need
    not be activated; else the name, found on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    return beside if os.path.isfile(beside) else name


def generate_command(data_bin, checkpoint, subset, beam, cpu, *extra):
    """A ``fairseq-generate`` command line with the settings of scripts/generate.sh (BPE removal as the
    data-bin's preprocessing.json says, ``--max-len-a 1.2 --max-len-b 10``, ``--max-tokens 4096``), then ``extra``."""
    with open(os.path.join(data_bin, "preprocessing.json")) as handle:
        bpe = json.load(handle)["bpe"]
    command = [fairseq_command("fairseq-generate"), data_bin, "--user-dir", os.path.join(REPO_ROOT, "adamra_fairseq"),
               "--path", checkpoint, "--gen-subset", subset, "--beam", str(beam),
               "--max-len-a", "1.2", "--max-len-b", "10", "--max-tokens", "4096", "--required-batch-size-multiple", "1",
               "--remove-bpe", "sentencepiece" if bpe == "sentencepiece" else "subword_nmt"]
    return command + (["--cpu"] if cpu else []) + list(extra)


def require_data_bin(path):
    """Stops with a one-line error unless ``path`` is a data-bin made by this project's recipes."""
    if not os.path.isfile(os.path.join(path, "preprocessing.json")):
        fail(f"{path} is not a data-bin of this project: run examples/translation/prepare-debian-de-en.sh")


def require_json_out(path):
    """Stops with a one-line error unless ``path`` names a .json file (its stem becomes the folder of run logs)."""
    if not path.endswith(".json"):
        fail(f"--out {path} is not a .json path: name the table file, e.g. --out {path.rstrip('/')}.json")


def print_and_save_table(lines, out, payload):
    """Prints the table ``lines`` and writes ``payload`` plus the table and the command line as JSON to ``out``."""
    print("\n".join(lines))
    with open(out, "w") as handle:
        json.dump({"command": sys.argv, **payload, "table": lines}, handle, indent=1)
    print(f"wrote {out}")


def run_measured(command, log_path, env, watcher=None, label="", append=False):
    """Runs ``command`` with stdout+stderr to ``log_path`` (appended to if ``append``); returns
    (exit code, seconds, peak RSS in MB). A ``watcher`` (:mod:`.progress`) is polled meanwhile and its
    status shown, prefixed by ``label``."""
    start = time.time()
    reporter = Reporter(label) if watcher else None
    with open(log_path, "a" if append else "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG if reporter else 0)
            if pid:
                break
            reporter.show(watcher())
            time.sleep(2)
    if reporter:
        reporter.close()
    code = os.waitstatus_to_exitcode(status)
    return code, time.time() - start, usage.ru_maxrss / 1024


def count_lines(path):
    """Lines in ``path``, or None if it does not exist."""
    if not os.path.isfile(path):
        return None
    with open(path, errors="replace") as handle:
        return sum(1 for _ in handle)


def load_measurement(save_dir, step):
    """Time and peak memory of a step that finished in an earlier run, or None."""
    path = os.path.join(save_dir, f"{step}.measure.json")
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        return json.load(handle)


def save_measurement(save_dir, step, seconds, peak_mb, command):
    """Marks a step as finished (written last, so an interrupted step is redone), with the command that ran."""
    measured = {"seconds": seconds, "peak_mb": peak_mb, "command": command}
    with open(os.path.join(save_dir, f"{step}.measure.json"), "w") as handle:
        json.dump(measured, handle)
    return measured


def run_step(save_dir, step, command, log_path, env, what, reuse_only=False, watcher=None):
    """Runs ``command`` unless ``step`` finished before in ``save_dir``; returns its measurement.

    A finished step is reused only if it ran the same command (``command`` None:
    any finished run is accepted, e.g. a --finetune-from parent's training).
    ``reuse_only``: never run it here (it belongs to another results folder).
    """
    measured = load_measurement(save_dir, step)
    if command is not None:
        command = [arg.replace(save_dir, "<run>") for arg in command]  # a run folder copied elsewhere still matches
    if measured is not None:
        if command is not None and measured.get("command", command) != command:
            fail(f"{save_dir} holds a finished {step} run with other flags ({' '.join(measured['command'][4:])}); "
                 "use another --out folder, or delete that run to redo it")
        if step == "train":
            print("      reusing the finished training run", flush=True)
        return measured
    if command is None or reuse_only:
        fail(f"{save_dir} has no finished {step} step: finish the run that owns it first")
    resuming = step == "train" and os.path.isfile(os.path.join(save_dir, "checkpoint_last.pt"))
    code, seconds, peak_mb = run_measured([arg.replace("<run>", save_dir) for arg in command], log_path, env,
                                          watcher, step, append=resuming)  # a resumed run keeps its earlier log
    if code != 0:
        fail(f"{what} failed (exit {code}); see {log_path}")
    return save_measurement(save_dir, step, seconds, peak_mb, command)


def previous_training_hours(checkpoint):
    """Training time a fairseq checkpoint has already counted: fairseq carries it into a run that starts from
    the checkpoint's weights, and --stop-time-hours counts it."""
    import torch  # importing this package has allow-listed fairseq's checkpoint contents in torch's safe loader

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return (state.get("extra_state") or {}).get("previous_training_time", 0.0) / 3600


_TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ")


def parse_training_log(path, metric="loss"):
    """Validation ``metric`` (loss, accuracy, ...) by update and by minutes since the log's first timestamped
    line (keys ``valid_METRIC`` and ``valid_METRIC_minutes``), mean training words/s of the logged intervals,
    final update count."""
    curve, by_minutes, wps, updates, first = [], [], [], 0, None
    with open(path, errors="replace") as handle:
        for line in handle:
            stamp = _TIMESTAMP.match(line)
            if stamp and first is None:
                first = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S")
            for step in re.findall(r"num_updates[= ](\d+)", line):  # train_inner, epoch and valid lines
                updates = max(updates, int(step))
            if "| valid on 'valid' subset" in line:
                value = re.search(rf"\| {metric} " + _FLOAT, line)
                step = re.search(r"\| num_updates (\d+)", line)
                if value and step:
                    curve.append((int(step.group(1)), float(value.group(1))))
                    if stamp:
                        elapsed = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S") - first
                        by_minutes.append((round(elapsed.total_seconds() / 60, 2), float(value.group(1))))
            elif "train_inner" in line:
                speed = re.search(r"wps=" + _FLOAT, line)
                if speed:
                    wps.append(float(speed.group(1)))
    return {f"valid_{metric}": curve, f"valid_{metric}_minutes": by_minutes,
            "train_wps": statistics.mean(wps) if wps else None, "updates": updates}


def generation_speed(path):
    """tokens/s from the 'Translated ...' line that fairseq-generate logs (to stderr, kept in the .log)."""
    with open(path, errors="replace") as handle:
        for line in handle:
            found = re.search(r"Translated .* sentences \(.* tokens\) in .*s \(.* sentences/s, " + _FLOAT + " tokens/s\\)",
                              line)
            if found:
                return float(found.group(1))
    return None


def mean_spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(mean, spread, digits=2):
    if mean is None:
        return "-"
    return f"{mean:.{digits}f} ± {spread:.{digits}f}" if spread else f"{mean:.{digits}f}"


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="Every --adamra-* flag of the model is passed on to the AdaMRA training (python -m adamra_fairseq "
               "lists them).")
    parser.add_argument("--data-bin", default=os.path.join(REPO_ROOT, "data", "debian-de-en", "data-bin"))
    parser.add_argument("--seeds", default="1", help="comma list of seeds, e.g. 1,2,3")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--max-update", type=int, help="same number of updates for both models (default 600)")
    budget.add_argument("--max-minutes", type=float, help="same wall-clock training time for both models")
    parser.add_argument("--size", choices=sorted(ARCHS), default="tiny")
    parser.add_argument("--finetune-from", metavar="DIR",
                        help="a finished adamra-compare folder: fine-tune AdaMRA models converted from its transformers "
                             "instead of training both models from scratch")
    parser.add_argument("--transformer-from", metavar="DIR",
                        help="an adamra-compare folder whose transformer runs (same seeds and flags) are reused instead "
                             "of training the transformer again, e.g. for several AdaMRA variants")
    parser.add_argument("--init-from", action="append", default=[], metavar="MODEL=DIR",
                        help="start MODEL (transformer or adamra) from the trained model of the same seed in the "
                             "adamra-compare folder DIR, e.g. sentence-level models continued on documents; repeatable")
    parser.add_argument("--heads", type=int,
                        help="attention heads in encoder and decoder of both models (default: the architecture's)")
    parser.add_argument("--lr", default=None,
                        help="peak learning rate of both models (default by --size: " + ", ".join(
                            f"{size} {rate}" for size, rate in DEFAULT_LR.items()) + "; docs/results.md: 2e-3 beat "
                             "1e-3 for both tiny models at 1000 updates, and 1e-3 beat 2e-3 for both small ones; "
                             "iwslt: fairseq's IWSLT'14 recipe)")
    parser.add_argument("--warmup-updates", default="200")
    parser.add_argument("--dropout", default="0.1")
    parser.add_argument("--max-tokens", type=int,
                        help="tokens per batch, training and generation (default 4096; on a document corpus at "
                             "least its segment cap + 16)")
    parser.add_argument("--validate-interval-updates", default="200")
    parser.add_argument("--models", default="transformer,adamra",
                        help="comma list of the models to train (default both): e.g. transformer alone, as the "
                             "--transformer-from parent of several AdaMRA variants")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="results folder (default results/compare-<time>)")
    args, model_flags = parser.parse_known_args()
    args.lr = args.lr or DEFAULT_LR[args.size]
    if not os.path.isfile(os.path.join(REPO_ROOT, "scripts", "train.sh")):
        fail(f"no scripts/train.sh under {REPO_ROOT}: the comparison runs the repository's recipes, so install "
             "adamra-fairseq from its checkout with pip install -e .")
    stray = [flag for flag in model_flags if flag.startswith("-") and not flag.startswith("--adamra-")]
    if stray or (model_flags and not model_flags[0].startswith("--adamra-")):
        fail(f"unrecognised arguments: {' '.join(stray or model_flags[:1])} (only --adamra-* flags are passed on to "
             "the AdaMRA model; see --help)")

    try:
        seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        fail(f"--seeds {args.seeds!r} is not a comma list of integers")
    models = [model for model in args.models.split(",") if model]
    if not models or set(models) - set(ARCHS[args.size]):
        fail(f"--models {args.models!r}: choose one or both of {','.join(ARCHS[args.size])}")
    if args.max_update is not None and args.max_update < 1:
        fail(f"--max-update {args.max_update} must be >= 1")
    if args.max_minutes is not None and args.max_minutes <= 0:
        fail(f"--max-minutes {args.max_minutes} must be > 0")
    if args.heads is not None and args.heads < 1:
        fail(f"--heads {args.heads} must be >= 1 (and divide the model width and be a multiple of the rate count)")
    if not os.path.isfile(os.path.join(args.data_bin, "preprocessing.json")):
        fail(f"{args.data_bin} has no preprocessing.json: build it with examples/translation/prepare-debian-de-en.sh "
             "(or prepare-iwslt14.sh) first")
    with open(os.path.join(args.data_bin, "preprocessing.json")) as handle:
        corpus = json.load(handle)
    test_sets, target_lang = corpus["test_sets"], corpus["target_lang"]
    segment_cap = corpus.get("max_tokens") if corpus.get("paragraph_separator") else None
    length_flags, generate_flags = [], []
    if segment_cap:  # a document corpus: room for its longest segment (+ end of sentence) in positions and batches
        room = segment_cap + 16
        length_flags = ["--max-source-positions", str(room), "--max-target-positions", str(room)]
        args.max_tokens = args.max_tokens or max(4096, room)
        if args.max_tokens < room:
            fail(f"--max-tokens {args.max_tokens} cannot hold a {segment_cap}-token segment of {args.data_bin}: "
                 f"use at least {room}")
        generate_flags = ["--max-tokens", str(args.max_tokens)]
    args.max_tokens = args.max_tokens or 4096
    if args.max_tokens < 1:
        fail(f"--max-tokens {args.max_tokens} must be >= 1")
    args.data_bin = os.path.abspath(args.data_bin)
    out = os.path.abspath(args.out or os.path.join(REPO_ROOT, "results", "compare-" + datetime.now().strftime("%Y%m%d-%H%M%S")))
    os.makedirs(out, exist_ok=True)
    budget_flags = (["--stop-time-hours", str(args.max_minutes / 60), "--max-update", "1000000"]
                    if args.max_minutes else ["--max-update", str(args.max_update or 600)])
    budget_text = f"{args.max_minutes} minutes" if args.max_minutes else f"{args.max_update or 600} updates"
    for flag, folder in (("--finetune-from", args.finetune_from), ("--transformer-from", args.transformer_from)):
        if folder and not os.path.isdir(os.path.join(folder, "transformer")):
            fail(f"{flag} {folder} has no transformer/ folder: pass the --out folder of a finished adamra-compare run")
    if args.finetune_from and args.transformer_from:
        fail("--finetune-from already takes the transformers from its folder: drop --transformer-from")
    init_from = {}
    for item in args.init_from:
        model, _, folder = item.partition("=")
        if model not in ARCHS[args.size] or not folder:
            fail(f"--init-from {item!r} is not MODEL=DIR with MODEL one of {', '.join(ARCHS[args.size])}")
        if not os.path.isdir(os.path.join(folder, model)):
            fail(f"--init-from {item}: {folder} has no {model}/ folder: pass the --out folder of a finished adamra-compare run")
        init_from[model] = os.path.abspath(folder)
    args.init_dirs = init_from
    if init_from and args.finetune_from:
        fail("--finetune-from already says where the models start: drop --init-from")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    env.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)

    print(f"comparing on {args.data_bin}: seeds {seeds}, budget {budget_text}, {args.size} sizes, "
          f"{args.threads} threads; results in {out}", flush=True)
    runs = {model: {} for model in ARCHS[args.size] if model in models}
    jobs = [(seed, model) for seed in seeds for model in runs]
    started, job_minutes = time.time(), []  # minutes of each job that trained here (reused ones take none)
    for index, (seed, model) in enumerate(jobs, 1):
        job_started = time.time()
        arch = ARCHS[args.size][model]
        save_dir = os.path.join(out, model, f"seed{seed}")
        parent_dir = os.path.join(args.finetune_from, "transformer", f"seed{seed}") if args.finetune_from else None
        elapsed = time.time() - started
        eta = ""
        if job_minutes:
            eta = f", about {statistics.mean(job_minutes) * (len(jobs) - index + 1):.0f} min left"
        print(f"[{index}/{len(jobs)}] training {arch} seed {seed} ({elapsed / 60:.1f} min elapsed{eta})", flush=True)
        reuse_only = model == "transformer" and bool(parent_dir or args.transformer_from)
        if reuse_only:  # trained by an earlier run, in its own folder; never retrained here
            save_dir = parent_dir or os.path.join(os.path.abspath(args.transformer_from), model, f"seed{seed}")
        command = ["bash", "scripts/train.sh", args.data_bin, save_dir, "--arch", arch, "--seed", str(seed),
                   "--lr", args.lr, "--warmup-updates", args.warmup_updates, "--dropout", args.dropout,
                   "--max-tokens", str(args.max_tokens), "--validate-interval-updates", args.validate_interval_updates,
                   "--no-epoch-checkpoints", "--log-interval", "50", *budget_flags, *length_flags]
        if args.heads:
            command += ["--encoder-attention-heads", str(args.heads), "--decoder-attention-heads", str(args.heads)]
        if model == "adamra":
            command += model_flags
        if model in init_from:  # also for a reused run: its recorded command names where it started
            start = os.path.join(init_from[model], model, f"seed{seed}", "checkpoint_last.pt")
            if not os.path.isfile(start):
                fail(f"--init-from {model}={init_from[model]}: missing {start} (train that seed there first)")
            command += ["--finetune-from-model", start]
            if args.max_minutes:  # the same minutes of training on top of the time the start checkpoint counted
                command[command.index("--stop-time-hours") + 1] = str(previous_training_hours(start)
                                                                      + args.max_minutes / 60)
        if parent_dir and model == "transformer":
            command = None  # a parent of any budget will do
        elif parent_dir:
            converted = os.path.join(save_dir, "converted.pt")
            os.makedirs(save_dir, exist_ok=True)
            if not os.path.isfile(converted):
                convert = [sys.executable, "-m", "adamra_fairseq.convert", os.path.join(parent_dir, "checkpoint_last.pt"),
                           converted, "--data", args.data_bin, *model_flags]
                code = subprocess.run(convert, env=dict(env, PYTHONPATH=REPO_ROOT), cwd=REPO_ROOT).returncode
                if code != 0:
                    fail(f"converting {parent_dir}/checkpoint_last.pt failed (exit {code})")
            command += ["--finetune-from-model", converted]
        os.makedirs(save_dir, exist_ok=True)
        log_path = os.path.join(save_dir, "train.log")
        trained_before = load_measurement(save_dir, "train") is not None
        watcher = TrainingWatcher(log_path, None if args.max_minutes else args.max_update or 600, args.max_minutes)
        measured = run_step(save_dir, "train", command, log_path, env, f"training {arch} seed {seed}", reuse_only,
                            watcher)
        record = {"seed": seed, "arch": arch, "train_seconds": measured["seconds"],
                  "train_peak_mb": measured["peak_mb"], **parse_training_log(log_path), "tests": {}}
        for subset, name in test_sets.items():
            generate_log = os.path.join(save_dir, f"generate-{subset}.log")
            generate = ["bash", "scripts/generate.sh", args.data_bin, os.path.join(save_dir, "checkpoint_last.pt"),
                        subset, "--max-len-a", "1.2", "--max-len-b", "10", *generate_flags]
            watcher = GenerationWatcher(os.path.join(save_dir, f"generate-{subset}.txt.tmp"),
                                        count_lines(os.path.join(args.data_bin, f"{subset}.ref.{target_lang}")))
            measured = run_step(save_dir, f"generate-{subset}", generate, generate_log, env,
                                f"generating {subset} with {arch} seed {seed}", reuse_only, watcher)
            with open(os.path.join(save_dir, f"generate-{subset}.json")) as handle:
                scores = json.load(handle)
            scores.update(generate_seconds=measured["seconds"], generate_peak_mb=measured["peak_mb"],
                          generate_tokens_per_s=generation_speed(generate_log))
            record["tests"][name] = scores
            print(f"      {name}: BLEU {scores['bleu']:.2f}  chrF {scores['chrf']:.2f}  "
                  f"length ratio {fmt(scores.get('length_ratio'), None, 3)}", flush=True)
        runs[model][seed] = record
        if not trained_before:
            job_minutes.append((time.time() - job_started) / 60)

    write_report(out, args, runs, test_sets, seeds, budget_text)


def write_report(out, args, runs, test_sets, seeds, budget_text):
    lines = [f"# AdaMRA vs transformer ({args.size} sizes)", "",
             f"Command: `adamra-compare {shlex.join(sys.argv[1:])}`  ",
             f"Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; data: `{args.data_bin}`; "
             f"seeds {seeds}; budget {budget_text} each; {args.threads} threads.", "",
             *([f"{model} starts from the trained models of `{folder}` (same seed)." for model, folder in
               sorted(args.init_dirs.items())] + [""] if args.init_dirs else []),
             *([f"The AdaMRA models are the transformers of `{args.finetune_from}` converted "
                f"(`python -m adamra_fairseq.convert`) and fine-tuned for {budget_text}; the transformer rows are "
                "those parents.", ""] if args.finetune_from else []),
             "| model | test set | BLEU | chrF | length ratio |", "|---|---|---:|---:|---:|"]
    summary = {}
    for model, by_seed in runs.items():
        for name in test_sets.values():
            bleu = mean_spread([r["tests"][name]["bleu"] for r in by_seed.values()])
            chrf = mean_spread([r["tests"][name]["chrf"] for r in by_seed.values()])
            ratio = mean_spread([r["tests"][name].get("length_ratio") for r in by_seed.values()])
            summary[f"{model}|{name}"] = {"bleu": bleu, "chrf": chrf, "length_ratio": ratio}
            lines.append(f"| {model} | {name} | {fmt(*bleu)} | {fmt(*chrf)} | {fmt(*ratio, digits=3)} |")
    lines += ["", "| model | updates | train words/s | train peak MB | generate tokens/s | generate peak MB |",
              "|---|---:|---:|---:|---:|---:|"]
    for model, by_seed in runs.items():
        records = list(by_seed.values())
        gen_speed = mean_spread([t["generate_tokens_per_s"] for r in records for t in r["tests"].values()])
        gen_peak = mean_spread([t["generate_peak_mb"] for r in records for t in r["tests"].values()])
        lines.append(f"| {model} | {fmt(*mean_spread([r['updates'] for r in records]), digits=0)} "
                     f"| {fmt(*mean_spread([r['train_wps'] for r in records]), digits=0)} "
                     f"| {fmt(*mean_spread([r['train_peak_mb'] for r in records]), digits=0)} "
                     f"| {fmt(*gen_speed, digits=0)} | {fmt(*gen_peak, digits=0)} |")
    lines += document_lines(runs, test_sets)
    first = next(iter(next(iter(runs.values())).values()))
    signature = next(iter(first["tests"].values()))
    lines += ["", f"sacreBLEU signatures: BLEU `{signature['bleu_signature']}`, chrF `{signature['chrf_signature']}`.",
              "Length ratio: sacreBLEU's hypothesis over reference length (below 1: shorter translations; `-` for "
              "runs scored before it was recorded).",
              "Spread is the sample standard deviation over seeds (absent with one seed)."]
    report = "\n".join(lines) + "\n"
    with open(os.path.join(out, "report.md"), "w") as handle:
        handle.write(report)
    with open(os.path.join(out, "results.json"), "w") as handle:
        json.dump({"command": sys.argv, "runs": runs, "summary": summary}, handle, indent=1)
    plot(out, runs, test_sets)
    print("\n" + report)
    print(f"wrote {out}/report.md, results.json, loss_curves.png, bleu_per_seed.png")


def document_lines(runs, test_sets):
    """Report rows of a document corpus: paragraphs split back out, and segment-length buckets."""
    lines = []
    for name in test_sets.values():
        records = [(model, seed, record["tests"][name]) for model, by_seed in runs.items()
                   for seed, record in by_seed.items() if "paragraphs" in record["tests"][name]]
        if not records:
            continue
        lines += ["", f"{name}, paragraphs split back out of the segments (a hypothesis with fewer paragraphs is "
                  "padded with empty ones, surplus ones join its last):", "",
                  "| model | seed | paragraphs | segments with another paragraph count | BLEU | chrF |",
                  "|---|---:|---:|---:|---:|---:|"]
        for model, seed, scores in records:
            paragraphs = scores["paragraphs"]
            lines.append(f"| {model} | {seed} | {paragraphs['count']} | "
                         f"{paragraphs['segments_with_other_paragraph_count']} / {scores['sentences']} | "
                         f"{paragraphs['bleu']:.2f} | {paragraphs['chrf']:.2f} |")
        buckets = sorted({bucket for _, _, scores in records for bucket in scores.get("length_buckets", {})},
                         key=lambda bucket: int(bucket.split("-")[0]))
        if buckets:
            lines += ["", f"{name}, whole segments by length in tokens, the longer side (BLEU / chrF / length ratio, "
                      "segments):", "",
                      "| model | seed | " + " | ".join(buckets) + " |", "|---|---:|" + "---:|" * len(buckets)]
            for model, seed, scores in records:
                cells = []
                for bucket in buckets:
                    found = scores.get("length_buckets", {}).get(bucket)
                    cells.append(f"{found['bleu']:.2f} / {found['chrf']:.2f} / {fmt(found.get('length_ratio'), None, 3)} "
                                 f"({found['segments']})" if found else "-")
                lines.append(f"| {model} | {seed} | " + " | ".join(cells) + " |")
    return lines


def plot(out, runs, test_sets):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # validation loss against updates and against minutes of the log (what an equal wall-clock budget compares)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, key, label in zip(axes, ("valid_loss", "valid_loss_minutes"), ("updates", "minutes since the log began")):
        for model, by_seed in runs.items():
            for seed, record in by_seed.items():
                if record.get(key):
                    steps, losses = zip(*record[key])
                    axis.plot(steps, losses, marker="o", label=f"{model} seed {seed}")
        axis.set(xlabel=label, ylabel="validation loss (label-smoothed, base 2)", title="validation loss")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(os.path.join(out, "loss_curves.png"), dpi=110)

    names = list(test_sets.values())
    figure, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.8), squeeze=False)
    for axis, name in zip(axes[0], names):
        for offset, (model, by_seed) in enumerate(runs.items()):
            seeds = sorted(by_seed)
            axis.bar([i + 0.4 * offset for i in range(len(seeds))], [by_seed[s]["tests"][name]["bleu"] for s in seeds],
                     width=0.4, label=model)
            axis.set_xticks([i + 0.2 for i in range(len(seeds))], [f"seed {s}" for s in seeds])
        axis.set(title=name, ylabel="BLEU")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(os.path.join(out, "bleu_per_seed.png"), dpi=110)


if __name__ == "__main__":
    main()
