"""Length penalty chosen on the validation set, then scored on the test sets, for several checkpoints.

usage: adamra-lenpen-sweep [--data-bin DIR] [--lenpens 1,1.5,2,3] [--threads 2] --out DIR
                           NAME=CHECKPOINT [NAME=CHECKPOINT ...]

Beam search in fairseq ranks finished hypotheses by their summed log-probability
divided by length^lenpen; a model whose outputs come out short can be given
a higher lenpen. For each checkpoint, beam-5 ``fairseq-generate`` runs on the
validation set once per lenpen (settings of adamra-compare: BPE removed,
``--max-len-a 1.2 --max-len-b 10``); the lenpen with the best validation BLEU
(fairseq's sacreBLEU on the tokenised references) is kept, and every test set
is decoded with it and scored with sacreBLEU against the raw references. The
test sets are never used to choose. Everything is written under ``--out``
(finished steps are reused); the checkpoints' folders are not touched.
"""

import argparse
import json
import os
import re
import subprocess
import sys

import torch

from .compare import REPO_ROOT, fail, generate_command

SCORE_LINE = re.compile(r"BLEU = ([0-9.]+) .*ratio = ([0-9.]+)")


def generate(data_bin, checkpoint, subset, lenpen, out_txt, env):
    """Runs fairseq-generate into ``out_txt`` unless it exists; returns (BLEU, length ratio) of its last line."""
    if not os.path.isfile(out_txt):
        command = generate_command(data_bin, checkpoint, subset, 5, not torch.cuda.is_available(),
                                   "--lenpen", str(lenpen), "--scoring", "sacrebleu")
        with open(out_txt + ".tmp", "w") as handle:
            code = subprocess.run(command, stdout=handle, stderr=subprocess.DEVNULL, env=env).returncode
        if code != 0:
            fail(f"fairseq-generate of {checkpoint} on {subset} failed (exit {code}); rerun the command by hand to see why")
        os.replace(out_txt + ".tmp", out_txt)
    with open(out_txt) as handle:
        match = SCORE_LINE.search(handle.read().strip().splitlines()[-1])
    if not match:
        fail(f"{out_txt} does not end with fairseq's BLEU line; delete it and rerun")
    return float(match.group(1)), float(match.group(2))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", metavar="NAME=CHECKPOINT")
    parser.add_argument("--data-bin", default=os.path.join(REPO_ROOT, "data", "debian-de-en", "data-bin"))
    parser.add_argument("--lenpens", default="1,1.5,2,3", help="comma list of length penalties to try on valid")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True, help="folder for the generations, sweep.json and sweep.md")
    args = parser.parse_args()
    try:
        lenpens = [float(value) for value in args.lenpens.split(",")]
    except ValueError:
        fail(f"--lenpens {args.lenpens!r} is not a comma list of numbers")
    runs = []
    for spec in args.runs:
        name, _, checkpoint = spec.partition("=")
        if not name or not os.path.isfile(checkpoint):
            fail(f"{spec!r}: expected NAME=CHECKPOINT with an existing checkpoint file")
        runs.append((name, os.path.abspath(checkpoint)))
    manifest = os.path.join(args.data_bin, "preprocessing.json")
    if not os.path.isfile(manifest):
        fail(f"{args.data_bin} has no preprocessing.json: build it with examples/translation/prepare-debian-de-en.sh")
    with open(manifest) as handle:
        preprocessing = json.load(handle)
    test_sets = preprocessing["test_sets"]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=REPO_ROOT)

    results = {}
    for name, checkpoint in runs:
        folder = os.path.join(args.out, name)
        os.makedirs(folder, exist_ok=True)
        valid = {lenpen: generate(args.data_bin, checkpoint, "valid", lenpen,
                                  os.path.join(folder, f"valid-lenpen{lenpen:g}.txt"), env) for lenpen in lenpens}
        best = max(lenpens, key=lambda lenpen: valid[lenpen][0])
        tests = {}
        for subset, test_name in test_sets.items():
            out_txt = os.path.join(folder, f"{subset}-lenpen{best:g}.txt")
            generate(args.data_bin, checkpoint, subset, best, out_txt, env)
            scores_path = out_txt[:-4] + ".json"
            subprocess.run([sys.executable, "-m", "adamra_fairseq.evaluation", "--data-bin", args.data_bin,
                            "--subset", subset, "--json", scores_path, out_txt], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            with open(scores_path) as handle:
                tests[test_name] = json.load(handle)  # with sacreBLEU's length ratio on the detokenised text
        results[name] = {"checkpoint": checkpoint, "valid": {f"{lenpen:g}": {"bleu": bleu, "length_ratio": ratio}
                                                            for lenpen, (bleu, ratio) in valid.items()},
                         "lenpen": best, "tests": tests}
        print(f"{name}: lenpen {best:g} " + "  ".join(
            f"{test}: BLEU {scores['bleu']:.2f} chrF {scores['chrf']:.2f} ratio {scores['length_ratio']:.3f}"
            for test, scores in tests.items()), flush=True)

    with open(os.path.join(args.out, "sweep.json"), "w") as handle:
        json.dump({"command": sys.argv, "lenpens": lenpens, "results": results}, handle, indent=1)
    header = "| run | " + " | ".join(f"valid BLEU (ratio) lenpen {lenpen:g}" for lenpen in lenpens)
    header += " | chosen | " + " | ".join(f"{test} BLEU / chrF (ratio)" for test in test_sets.values()) + " |"
    lines = [header, "|---|" + "---:|" * (len(lenpens) + 1 + len(test_sets))]
    for name, result in results.items():
        cells = [f"{result['valid'][f'{lenpen:g}']['bleu']:.2f} ({result['valid'][f'{lenpen:g}']['length_ratio']:.3f})"
                 for lenpen in lenpens]
        cells.append(f"{result['lenpen']:g}")
        cells += [f"{scores['bleu']:.2f} / {scores['chrf']:.2f} ({scores['length_ratio']:.3f})"
                  for scores in result["tests"].values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    with open(os.path.join(args.out, "sweep.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
