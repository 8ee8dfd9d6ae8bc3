"""The benchmark scripts (scripts/benchmarks/) build the model the command line asks for, and the training profile
counts real saves."""

import argparse
import os
import re
import sys

import torch

import pytest

from conftest import REPO_ROOT, run

BENCHMARKS = os.path.join(REPO_ROOT, "scripts", "benchmarks")
sys.path.insert(0, BENCHMARKS)

from bench_generate import adamra_settings, build_model, describe_adamra  # noqa: E402
from profile_training import saved_bytes_by_line  # noqa: E402

from adamra_fairseq.modules.options import add_adamra_args  # noqa: E402


def parsed(*flags):
    parser = argparse.ArgumentParser()
    add_adamra_args(parser)
    return parser.parse_args(list(flags))


def test_adamra_flags_reach_the_benchmarked_model():
    settings = adamra_settings(parsed("--adamra-preset", "tuned-taylor", "--adamra-cross-feature-dim", "8",
                                      "--adamra-rates", "1"))
    assert settings == {"adamra_preset": "tuned-taylor", "adamra_cross_feature_dim": 8, "adamra_rates": "1"}
    assert describe_adamra(settings) == "preset tuned-taylor --adamra-rates 1 --adamra-cross-feature-dim 8"
    model, _ = build_model("adamra", "tiny", 50, 40, settings)
    layer = model.decoder.layers[0]
    assert layer.encoder_attn.options.feature_map == "taylor2" and layer.encoder_attn.query_key.output_dim == 8
    assert layer.self_attn.rates == (1,) and layer.self_attn.options.feature_map == "hedgehog"
    default, _ = build_model("adamra", "tiny", 50, 40, adamra_settings(parsed()))
    assert default.decoder.layers[0].encoder_attn.query_key.weight is None  # a softmax read: no projection
    assert default.decoder.layers[0].encoder_attn.options.blocks == 64


def test_probe_counts_each_saved_storage_once_under_the_line_that_saved_it():
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)

    def toy_model(source, lengths, target):
        y = torch.nn.functional.relu(x)  # saves its output: 3 x 4 float64
        return y * y  # saves y twice more: the same storage, already counted

    by_line = saved_bytes_by_line(toy_model, torch.zeros(1, 2), torch.zeros(1, 2))
    ((line, size),) = by_line.items()
    assert size == 3 * 4 * 8 and line.startswith("functional.py:") and "relu" in line

    model, dictionary = build_model("adamra", "tiny", 50, 40, adamra_settings(parsed()))
    model.train()
    source = torch.randint(dictionary.nspecial, len(dictionary), (3, 6))
    source[:, -1] = dictionary.eos()
    lines = saved_bytes_by_line(model, source, source.clone())
    # the dense forms (every short input) keep what their own backward passes need, under their own lines
    assert any("_BidirectionalDense.apply" in line for line in lines)
    assert any("_CausalDense.apply" in line for line in lines)


@pytest.mark.parametrize("script", ["bench_training.py", "bench_decode.py"])
def test_benchmark_tables_must_be_json_paths(tmp_path, script):
    """--out names the JSON table (its stem is the folder of run logs): a folder-like path is refused up front."""
    out = str(tmp_path / "table")
    result = run([sys.executable, os.path.join(BENCHMARKS, script), "--out", out, "a=b"], check=False)
    assert result.returncode != 0
    assert f"--out {out} is not a .json path" in result.stderr.strip().splitlines()[-1]
    assert not os.path.exists(out)


def test_output_lengths_counts_long_and_short_segments_against_their_references(tmp_path):
    generated = tmp_path / "generate-test.txt"
    generated.write_text(
        "S-0\tein Satz\nT-0\tone two three four\nH-0\t-0.1\tone two three four five six\n"
        "D-0\t-0.1\tone two three four five six\n"
        "S-1\tnoch einer\nT-1\tone two three four\nH-1\t-0.2\tone\nD-1\t-0.2\tone\n"
        "S-2\tdrei\nT-2\tone two\nH-2\t-0.3\tone two\nD-2\t-0.3\tone two\n",
        encoding="utf-8",
    )
    result = run([sys.executable, os.path.join(REPO_ROOT, "scripts", "output_lengths.py"), str(generated),
                  "--buckets", "1"])
    rows = [line for line in result.stdout.splitlines() if line.startswith(f"| {generated} |")]
    # 6 + 1 + 2 hypothesis words over 4 + 4 + 2 reference words; one segment too long, one too short
    assert rows[0] == f"| {generated} | 3 | 0.900 | 1 | 1 |"
    # by source words: segment 2 has one, 0 and 1 have two; segment 1 stopped early, missing its reference's end
    assert rows[1:] == [f"| {generated} | 1-1 | 1 | 1.000 | 0 (0.0%) | 0 | 0 |",
                        f"| {generated} | 2+ | 2 | 0.875 | 1 (50.0%) | 1 | 0 |"]
    empty = tmp_path / "empty.txt"
    empty.write_text("S-0\tnothing else\n", encoding="utf-8")
    failed = run([sys.executable, os.path.join(REPO_ROOT, "scripts", "output_lengths.py"), str(empty)], check=False)
    assert failed.returncode != 0 and "has no T- lines" in failed.stderr.strip().splitlines()[-1]


def test_missing_words_at_the_end_are_told_from_words_left_out_inside():
    sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))
    from output_lengths import missing_at_end

    reference = "open the dialog and choose a category ."
    assert missing_at_end("open the dialog .", reference) is True  # stopped after its first words
    assert missing_at_end("open the dialog and choose .", reference) is True
    assert missing_at_end("open the dialog and choose a category .", reference) is None  # nothing missing
    assert missing_at_end("open and choose a category .", reference) is False  # words left out inside
    assert missing_at_end("Open the dialog and choose a", reference) is True  # the end is what it lacks
    buckets = run([sys.executable, os.path.join(REPO_ROOT, "scripts", "output_lengths.py"), "--buckets", "0", "x"],
                  check=False)
    assert buckets.returncode != 0 and "needs positive word counts" in buckets.stderr.strip().splitlines()[-1]


def test_end_probabilities_match_a_sentence_read_alone(tiny_adamra_checkpoint, tiny_data_bin):
    """eos_probability reads batches with padding; each sentence read alone (no padding, fairseq's own
    get_normalized_probs) gives the same P(eos) at every position, before and at the reference's end."""
    from eos_probability import end_probabilities, summary
    from profile_decode import load

    model, task, dataset = load(tiny_adamra_checkpoint, tiny_data_bin, "test")
    results = end_probabilities(model, task, dataset)
    assert len(results) == len(dataset)
    order = [index for batch in task.get_batch_iterator(dataset, max_tokens=4096, required_batch_size_multiple=1)
             .next_epoch_itr(shuffle=False) for index in batch["id"].tolist()]
    eos = task.target_dictionary.eos()
    for (before, at_end, early), index in list(zip(results, order))[:4]:
        item = dataset[index]
        target = item["target"]
        previous = torch.cat([torch.tensor([eos]), target[:-1]]).unsqueeze(0)
        with torch.no_grad():
            output = model(item["source"].unsqueeze(0), torch.tensor([len(item["source"])]), previous)
            probabilities = model.get_normalized_probs(output, log_probs=False)[0]
        assert torch.allclose(torch.tensor(before + [at_end]), probabilities[:, eos], atol=1e-5)
        assert early == bool(probabilities[:-1].argmax(dim=-1).eq(eos).any())
    found = summary(results)
    assert found["sentences"] == len(dataset) and 0 < found["at_end"] <= 1
    assert 0 <= found["could_stop_early"] <= len(dataset)


def test_profile_decode_times_and_profiles_beam_search(tiny_adamra_checkpoint, tiny_data_bin, tmp_path):
    script = os.path.join(BENCHMARKS, "profile_decode.py")
    result = run([sys.executable, script, tiny_adamra_checkpoint, "--data-bin", tiny_data_bin, "--subset", "test",
                  "--beam", "2", "--sentences", "5", "--repeats", "1", "--rows", "5"])
    summary = re.search(r"(\d+) decoder steps, (\d+) output tokens in [\d.]+ s .*?: ([\d.]+) tokens/s, "
                        r"([\d.]+) ms per decoder step", result.stdout)
    assert summary, result.stdout
    steps, tokens = int(summary.group(1)), int(summary.group(2))
    assert steps >= 2 and tokens >= 5  # at least one token (eos) per sentence, several steps per batch
    assert "aten::" in result.stdout  # the operator table
    parts = re.search(r"time by part \(one more pass, ([\d.]+) ms.*?\): (.*), the rest .*? ([\d.]+) ms", result.stdout)
    assert parts, result.stdout
    shares = {part.strip(): seconds for part, seconds in re.findall(r"([a-z -]+) ([\d.]+) ms \(\d+%\)", parts.group(2))}
    assert set(shares) == {"encoder layers", "decoder self-attention", "cross-attention", "feed-forward", "output layer"}
    assert all(float(ms) > 0 for ms in shares.values())
    assert float(parts.group(3)) >= 0 and sum(map(float, shares.values())) <= float(parts.group(1)) + 0.5
    missing = run([sys.executable, script, str(tmp_path / "none.pt"), "--data-bin", tiny_data_bin], check=False)
    assert missing.returncode == 2 and "does not exist" in missing.stderr.strip().splitlines()[-1]
    no_subset = run([sys.executable, script, tiny_adamra_checkpoint, "--data-bin", tiny_data_bin, "--subset", "nope"],
                    check=False)
    assert no_subset.returncode == 2 and "has no subset 'nope'" in no_subset.stderr.strip().splitlines()[-1]


def test_profile_training_times_each_part_of_both_models():
    script = os.path.join(BENCHMARKS, "profile_training.py")
    result = run([sys.executable, script, "--size", "tiny", "--sentences", "3", "--length", "6", "--repeats", "1",
                  "--rows", "4"])
    rows = {name: (float(transformer), float(adamra)) for name, transformer, adamra in re.findall(
        r"^\| (.+?) \(x\d+\) \| ([\d.]+) \| ([\d.]+) \| [\d.]+ \|$", result.stdout, re.M)}
    assert set(rows) == {"whole step", "encoder self-attention", "decoder self-attention", "cross-attention",
                         "  of which the attention op: encoder self-attention",
                         "  of which the attention op: decoder self-attention"}, result.stdout
    assert all(min(times) > 0 for times in rows.values())
    assert "| the rest (" in result.stdout and "aten::" in result.stdout  # the operator table
    saved = dict(re.findall(r"^(transformer|adamra): ([\d.]+) MB saved for the backward pass", result.stdout, re.M))
    assert set(saved) == {"transformer", "adamra"} and all(float(mb) > 0 for mb in saved.values()), result.stdout
    bad = run([sys.executable, script, "--repeats", "0"], check=False)
    assert bad.returncode == 2 and "must be positive" in bad.stderr.strip().splitlines()[-1]


def test_live_memory_maps_every_large_tensor_on_its_own():
    """bench_attention --live-memory: glibc raises its mmap threshold when a large mapped block is freed, after
    which mid-sized tensors come from the heap and their memory stays in the process once freed (what the
    default peak counts). After release_freed_memory() a 1 MB tensor is still mapped on its own (so freeing it
    unmaps it); without it, it is not (the control, so the test can fail)."""
    code = (
        "import ctypes, sys; sys.path.insert(0, 'scripts/benchmarks')\n"
        "import torch\n"
        "from bench_attention import release_freed_memory\n"
        "class Info(ctypes.Structure):\n"
        "    _fields_ = [(name, ctypes.c_size_t) for name in ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd',\n"
        "                'usmblks', 'fsmblks', 'uordblks', 'fordblks', 'keepcost')]\n"
        "libc = ctypes.CDLL('libc.so.6'); libc.mallinfo2.restype = Info\n"
        "if sys.argv[1] == 'live': release_freed_memory()\n"
        "x = torch.ones(4 * 2 ** 20); del x\n"  # a freed 16 MB mapped block
        "before = libc.mallinfo2().hblkhd\n"
        "y = torch.ones(2 ** 18)\n"  # 1 MB
        "print((libc.mallinfo2().hblkhd - before) // 1024)\n"
    )
    mapped = {mode: int(run([sys.executable, "-c", code, mode], cwd=REPO_ROOT).stdout) for mode in ("live", "default")}
    assert mapped["live"] >= 1024 and mapped["default"] == 0


def test_attention_points_record_the_library_code_they_load():
    """bench_attention: a point's peak counts the code of torch's libraries its kernels load (file-backed
    resident pages); each point records that growth as ``code_mb``, within its peak, and the memory ratio
    without code pages subtracts it. A kernel never called before in the process loads code; an array of the
    same size made by a kernel already called loads none (the control)."""
    code = (
        "import sys; sys.path.insert(0, 'scripts/benchmarks')\n"
        "import torch\n"
        "from bench_attention import file_backed_rss_kb\n"
        "x = torch.ones(2 ** 16); x + x\n"
        "before = file_backed_rss_kb(); y = x + x; same = file_backed_rss_kb() - before\n"
        "before = file_backed_rss_kb(); torch.special.bessel_j1(x); torch.linalg.eigvals(torch.ones(6, 6))\n"
        "print(same, file_backed_rss_kb() - before)\n"
    )
    same, new = map(int, run([sys.executable, "-c", code], cwd=REPO_ROOT).stdout.split())
    assert same == 0 and new > 0
    from bench_attention import data_memory

    assert data_memory({"peak_mb": 40.0, "code_mb": 25.0}) == 15.0 and data_memory({"peak_mb": 40.0}) == 40.0
