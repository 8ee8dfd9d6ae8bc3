"""How strongly trained models want to end a sentence along the reference: the end-of-sentence probability.

usage: python scripts/benchmarks/eos_probability.py [--data-bin DIR] [--subset test] NAME=CHECKPOINT [...]

Each checkpoint reads every sentence of ``--subset`` with its reference as
the decoder's input (teacher forcing, eval mode, one forward pass per batch)
and gives, at each target position, the probability of the end-of-sentence
symbol. Before the reference's end that probability is a wish to stop early;
at its end, the wish to stop where the reference does. Per model the table
gives the mean probability of ending at the first three positions (before
the reference's end), in each quarter of the reference (by position over
its length) and at its end, and how many sentences have a
position before the end where ending is the model's most probable choice
(greedy search would stop there). Models must share the
data-bin's dictionaries; nothing is written.
"""

import argparse
import os
import sys
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from profile_decode import load  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the checkout
from adamra_fairseq.cli.compare import REPO_ROOT, fail, require_data_bin  # noqa: E402

QUARTERS = ("0-25%", "25-50%", "50-75%", "75-100%")
FIRST = 3  # the first target positions, where a causal attention has seen only a few tokens


@torch.no_grad()
def end_probabilities(model, task, dataset):
    """Per sentence, ``(P(eos) at each target position before the end, P(eos) at the end, whether eos is the most
    probable token somewhere before the end)``."""
    eos = task.target_dictionary.eos()
    iterator = task.get_batch_iterator(dataset, max_tokens=4096, required_batch_size_multiple=1)
    results = []
    for batch in iterator.next_epoch_itr(shuffle=False):
        net_input, target = batch["net_input"], batch["target"]
        logits, _ = model(**net_input)
        probabilities = torch.softmax(logits.float(), dim=-1)
        lengths = target.ne(task.target_dictionary.pad()).sum(dim=1)
        for row in range(target.size(0)):
            length = int(lengths[row])  # the reference's tokens and its final eos
            p_eos = probabilities[row, :length, eos]
            early = bool(probabilities[row, :length - 1].argmax(dim=-1).eq(eos).any())
            results.append((p_eos[:length - 1].tolist(), float(p_eos[length - 1]), early))
    return results


def summary(results):
    """Mean P(eos) by quarter of the reference before its end, at its end, and the sentences that could stop early."""
    by_quarter = {quarter: [] for quarter in QUARTERS}
    first = []
    for before, _, _ in results:
        first += before[:FIRST]
        for position, probability in enumerate(before):
            by_quarter[QUARTERS[min(3, 4 * position // max(1, len(before)))]].append(probability)
    mean = {quarter: sum(values) / len(values) if values else float("nan") for quarter, values in by_quarter.items()}
    return {"before_end": mean, "first_positions": sum(first) / len(first) if first else float("nan"), "at_end": sum(at for _, at, _ in results) / len(results),
            "could_stop_early": sum(early for _, _, early in results), "sentences": len(results)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+", metavar="NAME=CHECKPOINT")
    parser.add_argument("--data-bin", default=os.path.join(REPO_ROOT, "data", "debian-de-en", "data-bin"))
    parser.add_argument("--subset", default="test")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    require_data_bin(args.data_bin)
    named = []
    for item in args.checkpoints:
        name, sep, path = item.partition("=")
        if not sep or not name or not os.path.isfile(path):
            fail(f"{item!r}: expected NAME=CHECKPOINT with an existing checkpoint file")
        named.append((name, path))
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)  # fairseq's data loader and mask-type notices
    print(f"P(end of sentence) along the reference, {args.subset} of {args.data_bin}, teacher forcing\n")
    print(f"| model | first {FIRST} positions | " + " | ".join(f"before the end, {quarter}" for quarter in QUARTERS)
          + " | at the end | sentences where ending is the first choice before the end |")
    print("|---|" + "---:|" * (len(QUARTERS) + 3))
    for name, path in named:
        model, task, dataset = load(path, args.data_bin, args.subset)
        found = summary(end_probabilities(model, task, dataset))
        cells = [f"{found['first_positions']:.4f}"] + [f"{found['before_end'][quarter]:.4f}" for quarter in QUARTERS]
        print(f"| {name} | " + " | ".join(cells) + f" | {found['at_end']:.3f} | "
              f"{found['could_stop_early']} / {found['sentences']} |", flush=True)


if __name__ == "__main__":
    main()
