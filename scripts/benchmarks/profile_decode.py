"""Where beam search spends its time: decode test sentences with a checkpoint in-process, time it, profile it.

usage: python scripts/benchmarks/profile_decode.py CHECKPOINT [--data-bin DIR] [--subset test] [--beam 5]
                                        [--sentences 240] [--repeats 5] [--threads 1] [--rows 25]

Loads the checkpoint with fairseq, takes the first batches of ``--subset``
(``--max-tokens 4096``, as scripts/generate.sh) until they hold
``--sentences`` sentences, and decodes them with fairseq's
``SequenceGenerator`` (``--max-len-a 1.2 --max-len-b 10``): one warm-up pass,
then ``--repeats`` timed passes (the fastest is reported), then one pass
under ``torch.profiler``. Prints the decoder steps, output tokens, tokens/s and
milliseconds per decoder step (what one step of every layer costs, whatever
the output lengths), the time spent in each part of the model (encoder layers,
decoder self-attention, cross-attention, feed-forward blocks, output layer)
and the operators that took the most time. Nothing is
written; scripts/benchmarks/bench_decode.py gives the end-to-end fairseq-generate speed.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the checkout
from adamra_fairseq.cli.compare import REPO_ROOT, fail, require_data_bin  # noqa: E402


def load(checkpoint, data_bin, subset):
    """(model in eval mode, task, dataset) of ``checkpoint`` with ``data_bin``'s dictionaries."""
    from fairseq import checkpoint_utils, utils

    utils.import_user_module(argparse.Namespace(user_dir=os.path.join(REPO_ROOT, "adamra_fairseq")))
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([checkpoint], arg_overrides={"data": data_bin})
    try:
        task.load_dataset(subset)
    except FileNotFoundError:
        fail(f"{data_bin} has no subset {subset!r}: pass --subset with one it has (e.g. test, valid)")
    return models[0].eval(), task, task.dataset(subset)


def first_batches(task, dataset, sentences):
    """The first batches (``--max-tokens 4096``, unshuffled) holding at least ``sentences`` sentences."""
    iterator = task.get_batch_iterator(dataset, max_tokens=4096, required_batch_size_multiple=1)
    batches, count = [], 0
    for batch in iterator.next_epoch_itr(shuffle=False):
        batches.append(batch)
        count += batch["nsentences"]
        if count >= sentences:
            break
    return batches, count


def model_parts(model):
    """The modules of each part of an encoder-decoder transformer whose forward time is reported."""
    layers = model.decoder.layers
    return {
        "encoder layers": list(model.encoder.layers),  # fairseq calls the encoder itself without hooks
        "decoder self-attention": [layer.self_attn for layer in layers],
        "cross-attention": [layer.encoder_attn for layer in layers if layer.encoder_attn is not None],
        "feed-forward": [module for layer in layers for module in (layer.fc1, layer.fc2)],
        "output layer": [model.decoder.output_projection],
    }


def time_by_part(model, decode):
    """``({part: seconds}, total seconds)`` of one ``decode()`` pass, timed by forward hooks."""
    spent, started, handles = {}, {}, []
    for part, modules in model_parts(model).items():
        spent[part] = 0.0
        for module in modules:
            def start(_module, _inputs, key=id(module)):
                started[key] = time.perf_counter()

            def stop(_module, _inputs, _output, key=id(module), part=part):
                spent[part] += time.perf_counter() - started[key]

            handles += [module.register_forward_pre_hook(start), module.register_forward_hook(stop)]
    begin = time.perf_counter()
    decode()
    total = time.perf_counter() - begin
    for handle in handles:
        handle.remove()
    return spent, total


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data-bin", default=os.path.join(REPO_ROOT, "data", "debian-de-en", "data-bin"))
    parser.add_argument("--subset", default="test")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--sentences", type=int, default=240)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=25, help="operators shown in the profile table")
    args = parser.parse_args()
    if min(args.beam, args.sentences, args.repeats, args.threads, args.rows) < 1:
        fail("--beam, --sentences, --repeats, --threads and --rows must be positive")
    if not os.path.isfile(args.checkpoint):
        fail(f"checkpoint {args.checkpoint} does not exist: pass a checkpoint_*.pt written by fairseq-train")
    require_data_bin(args.data_bin)

    import torch
    from fairseq.sequence_generator import SequenceGenerator
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(args.threads)
    model, task, dataset = load(args.checkpoint, args.data_bin, args.subset)
    batches, sentences = first_batches(task, dataset, args.sentences)
    generator = SequenceGenerator([model], task.target_dictionary, beam_size=args.beam, max_len_a=1.2, max_len_b=10)
    steps = [0]
    # fairseq calls decoder.forward directly (no hooks there); its first layer runs once per step
    model.decoder.layers[0].register_forward_hook(lambda *_: steps.__setitem__(0, steps[0] + 1))

    def decode():
        """Output tokens of one pass over the batches."""
        tokens = 0
        with torch.no_grad():
            for batch in batches:
                tokens += sum(len(hypotheses[0]["tokens"]) for hypotheses in generator.generate([model], batch))
        return tokens

    decode()  # warm-up
    times = []
    for _ in range(args.repeats):
        steps[0] = 0
        start = time.perf_counter()
        tokens = decode()
        times.append(time.perf_counter() - start)
    seconds = min(times)
    print(f"{args.checkpoint}: {sentences} sentences of {args.subset}, beam {args.beam}, {args.threads} thread(s)")
    print(f"{steps[0]} decoder steps, {tokens} output tokens in {seconds:.2f} s (fastest of {args.repeats}): "
          f"{tokens / seconds:.1f} tokens/s, {1000 * seconds / steps[0]:.1f} ms per decoder step")
    spent, total = time_by_part(model, decode)
    print(f"time by part (one more pass, {1000 * total:.1f} ms, timed by forward hooks): " + ", ".join(
        f"{part} {1000 * seconds:.1f} ms ({100 * seconds / total:.0f}%)" for part, seconds in spent.items())
        + f", the rest (beam search, embeddings, norms) {1000 * (total - sum(spent.values())):.1f} ms")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        decode()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
