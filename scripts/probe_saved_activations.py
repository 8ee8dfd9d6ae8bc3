"""What one training forward keeps for its backward pass: the transformer against AdaMRA, by source line.

usage: python scripts/probe_saved_activations.py [--size small|tiny] [--sentences 128] [--length 30]
                                                 [--top 12] [--adamra-* ...]

Builds both models with random weights (as scripts/bench_long.py does), runs
one forward pass in training mode on a batch of random sentences, and counts
every tensor that autograd saves for the backward pass (through
``torch.autograd.graph.saved_tensors_hooks``), each storage once, under the
innermost line of fairseq, AdaMRA or ``torch.nn.functional`` that saved it.
Activation memory is what separates the two models' training peaks; this
says where it goes. No timing: the numbers do not depend on the machine.
"""

import argparse
import collections
import os
import sys
import traceback

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))

import torch  # noqa: E402

from bench_generate import (  # noqa: E402
    MODELS, adamra_settings, add_random_batch_args, build_model, check_random_batch_args, describe_adamra, random_batch,
)

SOURCE_MARKERS = ("adamra_fairseq", os.sep + "fairseq" + os.sep, os.path.join("torch", "nn", "functional"))


def saving_line() -> str:
    """``file:line code`` of the innermost frame of the model code that is saving a tensor."""
    for frame in reversed(traceback.extract_stack()):
        if any(marker in frame.filename for marker in SOURCE_MARKERS):
            return f"{os.path.basename(frame.filename)}:{frame.lineno} {(frame.line or '').strip()[:70]}"
    return "(elsewhere)"


def saved_bytes_by_line(model, source, target):
    """``{line: bytes}`` saved for backward by one forward of ``model``; each storage counted once."""
    by_line, seen = collections.Counter(), set()

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            by_line[saving_line()] += storage.nbytes()
        return tensor

    lengths = torch.full((source.size(0),), source.size(1))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(source, lengths, target)
    return by_line


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_random_batch_args(parser, sentences=128)
    parser.add_argument("--top", type=int, default=12, help="lines shown per model")
    args = parser.parse_args()
    check_random_batch_args(parser, args)

    import logging

    import adamra_fairseq  # noqa: F401  (registers the models)

    logging.getLogger().setLevel(logging.WARNING)
    settings = adamra_settings(args)
    print(f"one training forward, {args.size} sizes, {args.sentences} sentences of {args.length} tokens; "
          f"AdaMRA {describe_adamra(settings)}")
    for kind in MODELS:
        model, dictionary = build_model(kind, args.size, args.vocab, args.length + 8, settings)
        model.train()
        source, target = random_batch(dictionary, args.sentences, args.length)
        by_line = saved_bytes_by_line(model, source, target)
        print(f"\n{kind}: {sum(by_line.values()) / 2**20:.0f} MB saved for the backward pass")
        for line, size in by_line.most_common(args.top):
            print(f"{size / 2**20:8.1f} MB  {line}")


if __name__ == "__main__":
    main()
