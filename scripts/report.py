"""Markdown table of the generate-*.json scores found in checkpoint folders.

usage: python scripts/report.py CHECKPOINT_DIR [CHECKPOINT_DIR ...]
"""

import glob
import json
import os
import sys


def main(folders):
    rows = []
    for folder in folders:
        for path in sorted(glob.glob(os.path.join(folder, "generate-*.json"))):
            with open(path, encoding="utf-8") as handle:
                result = json.load(handle)
            rows.append((os.path.basename(os.path.normpath(folder)), result))
    if not rows:
        print("error: no generate-*.json in " + ", ".join(folders), file=sys.stderr)
        return 2
    print("| model | test set | sentences | BLEU | chrF |")
    print("|---|---|---:|---:|---:|")
    for model, result in rows:
        print(f"| {model} | {result['test_set']} | {result['sentences']} | {result['bleu']:.2f} | {result['chrf']:.2f} |")
    signatures = sorted({(r["bleu_signature"], r["chrf_signature"]) for _, r in rows})
    for bleu, chrf in signatures:
        print(f"\nsacreBLEU signatures: BLEU {bleu}; chrF {chrf}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
