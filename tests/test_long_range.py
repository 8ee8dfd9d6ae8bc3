"""Long-input classification: the ListOps generator, the help-module task's split, the AdaMRA classifier
through fairseq's sentence_prediction task, and adamra-long-range."""

import json
import os
import random
import re

import pytest
import torch
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.modules import MultiheadAttention

from adamra_fairseq.data import help_modules, listops
from adamra_fairseq.modules import MultiResolutionAttention
from conftest import BIN_DIR, REPO_ROOT, USER_DIR, run


def reference_value(tokens):
    """An independent ListOps evaluator: recursive descent, returns (value, tokens consumed)."""
    head = tokens[0]
    if head.isdigit():
        return int(head), 1
    position, arguments = 1, []
    while tokens[position] != "]":
        value, used = reference_value(tokens[position:])
        arguments.append(value)
        position += used
    combine = {"[MAX": max, "[MIN": min, "[SM": lambda a: sum(a) % 10,
               "[MED": lambda a: sorted(a)[(len(a) - 1) // 2] if len(a) % 2 else
               (sorted(a)[len(a) // 2 - 1] + sorted(a)[len(a) // 2]) // 2}[head]
    return combine(arguments), position + 1


def depth_and_arities(tokens):
    depth, deepest, counts, arities = 0, 0, [], []
    for token in tokens:
        if token.startswith("["):
            if counts:
                counts[-1] += 1
            depth += 1
            deepest = max(deepest, depth)
            counts.append(0)
        elif token == "]":
            arities.append(counts.pop())
            depth -= 1
        else:
            if counts:
                counts[-1] += 1
            deepest = max(deepest, depth + 1)
    return deepest, arities


@pytest.mark.parametrize("text, value", [
    ("7", 7), ("[MAX 2 9 [MIN 4 7 ] 0 ]", 9), ("[MIN 3 [MAX 1 8 ] 5 ]", 3), ("[SM 5 7 9 ]", 1),
    ("[MED 1 2 ]", 1), ("[MED 3 1 2 ]", 2), ("[MED 9 0 4 8 ]", 6), ("[SM [MED 8 9 ] [MAX 0 1 ] ]", 9),
])
def test_listops_values_of_known_expressions(text, value):
    assert listops.evaluate(text.split()) == value
    assert reference_value(text.split())[0] == value


@pytest.mark.parametrize("text", ["]", "[MAX ]", "[MAX 1 2", "1 2", "[MAX 1 x ]", "[MAX 1 ] 3", ""])
def test_listops_rejects_malformed_expressions(text):
    with pytest.raises(listops.ListOpsError):
        listops.evaluate(text.split())


def test_listops_generator_keeps_to_the_definition_and_is_deterministic():
    examples = listops.generate(60, min_length=40, max_length=120, seed=3, max_depth=6, max_args=5)
    assert len({" ".join(tokens) for tokens, _ in examples}) == 60
    for tokens, value in examples:
        assert 40 <= len(tokens) <= 120
        assert value == reference_value(tokens)[0]
        deepest, arities = depth_and_arities(tokens)
        assert deepest <= 6 and all(2 <= arity <= 5 for arity in arities)
        assert set(tokens) <= set(listops.OPERATORS) | {"]"} | set(listops.DIGITS)
    assert listops.generate(60, 40, 120, seed=3, max_depth=6, max_args=5) == examples
    assert listops.generate(60, 40, 120, seed=4, max_depth=6, max_args=5) != examples
    # an operator node is about a quarter of the nodes below the maximum depth (the others are digits)
    many = listops.generate(200, 1, 400, seed=5)
    nodes = [t for tokens, _ in many for t in tokens if t != "]"]
    assert 0.15 < sum(t in listops.OPERATORS for t in nodes) / len(nodes) < 0.3


def test_listops_splits_do_not_share_expressions_and_bad_settings_get_one_line(tmp_path):
    labels = listops.write_splits(str(tmp_path), {"train": 40, "valid": 10, "test": 10}, 10, 60, seed=1)
    texts = {split: set(open(tmp_path / f"{split}.input0").read().splitlines()) for split in labels}
    assert len(texts["train"]) == 40 and not texts["train"] & texts["test"] and not texts["valid"] & texts["test"]
    assert [int(v) for v in open(tmp_path / "test.label").read().split()] == labels["test"]
    for flags, message in ((["--min-length", "50", "--max-length", "10"], "need 1 <= min <= max"),
                           (["--max-depth", "2", "--max-args", "3", "--min-length", "50"], "allow at most 5 tokens"),
                           (["--operator-probability", "1"], "strictly between 0 and 1"),
                           (["--test", "0"], "--test 0 must be >= 1")):
        result = run([os.path.join(BIN_DIR, "python"), "-m", "adamra_fairseq.data.listops", "--out",
                      str(tmp_path / "bad"), *flags], check=False)
        assert result.returncode == 2 and message in result.stderr
        assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
            result.stderr.strip().splitlines()[-1]]


def fake_help_tree(root, pages_per_module=12):
    """English and German help folders with pages whose paragraphs name their page (``PAGE scalc/3``)."""
    for language in ("en-US", "de"):
        for module in ("sbasic", "scalc"):
            for number in range(pages_per_module):
                folder = root / "usr/share/libreoffice/help" / language / "text" / module / "01"
                folder.mkdir(parents=True, exist_ok=True)
                paragraphs = "".join(f'<p id="par_{i}">PAGE {module}/{number} {language} paragraph {i} '
                                     + "text " * random.Random(number * 10 + i).randint(5, 40) + "</p>"
                                     for i in range(8))
                (folder / f"page{number}.html").write_text(f"<html><body>{paragraphs}</body></html>")


def test_help_module_passages_never_straddle_splits(tmp_path):
    fake_help_tree(tmp_path)
    examples = help_modules.build(str(tmp_path), ["sbasic", "scalc"], 200, 400, valid_percent=25,
                                  test_percent=25, seed=1)
    pages_by_split = {}
    for split, found in examples.items():
        for tokens, module in found:
            text = bytes(int(token, 16) for token in tokens.split()).decode("utf-8", errors="replace")
            assert 200 <= len(tokens.split()) <= 400
            for page in set(re.findall(r"PAGE (\w+/\d+) ", text)):  # markers cut off at the end are skipped
                assert page.startswith(module + "/")
                pages_by_split.setdefault(page, set()).add(split)
    assert pages_by_split and all(len(splits) == 1 for splits in pages_by_split.values())
    for page, (split,) in pages_by_split.items():  # the split is a function of the page path alone
        module, number = page.split("/")
        assert help_modules.split_of(f"text/{module}/01/page{number}.html", 25, 25) == split
    assert {split for splits in pages_by_split.values() for split in splits} == {"train", "valid", "test"}
    assert help_modules.byte_tokens("Aä".encode()) == "41 c3 a4"


def test_help_module_task_names_a_missing_module(tmp_path):
    fake_help_tree(tmp_path, pages_per_module=2)
    result = run([os.path.join(BIN_DIR, "python"), "-m", "adamra_fairseq.data.help_modules", "--root",
                  str(tmp_path), "--out", str(tmp_path / "out"), "--modules", "sbasic,swriter"], check=False)
    assert result.returncode == 2 and "missing" in result.stderr and "text/swriter" in result.stderr


@pytest.fixture(scope="module")
def listops_data_bin(tmp_path_factory):
    """A small ListOps data-bin built by the example recipe (short expressions, so that tests stay quick)."""
    out = tmp_path_factory.mktemp("listops")
    run(["bash", os.path.join(REPO_ROOT, "examples/long_range/prepare-listops.sh"), "--out", str(out),
         "--train", "48", "--valid", "12", "--test", "13", "--min-length", "20", "--max-length", "60"])
    return str(out / "data-bin")


def classifier(data_bin, arch, *flags):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [
        data_bin, "--user-dir", USER_DIR, "--task", "sentence_prediction", "--criterion", "sentence_prediction",
        "--num-classes", "10", "--init-token", "0", "--max-positions", "64", "--arch", arch, "--cpu", *flags])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    return task, task.build_model(cfg.model)


def test_recipe_writes_what_the_task_needs(listops_data_bin):
    task = json.load(open(os.path.join(listops_data_bin, "task.json")))
    raw = os.path.join(os.path.dirname(listops_data_bin), "raw")
    longest = max(len(line.split()) for split in ("train", "valid", "test")
                  for line in open(os.path.join(raw, f"{split}.input0")))
    assert task == {"num_classes": 10, "max_positions": longest + 2}  # + the end marker and <s>
    assert len(open(os.path.join(listops_data_bin, "label", "dict.txt")).read().splitlines()) == 10


def test_adamra_flags_reach_the_encoder_layers_and_the_twin_is_vanilla(listops_data_bin):
    _, model = classifier(listops_data_bin, "adamra_roberta_tiny", "--adamra-rates", "1,2", "--adamra-feature-map",
                          "elu")
    layers = model.encoder.sentence_encoder.layers
    assert len(layers) == 2
    for layer in layers:
        assert isinstance(layer.self_attn, MultiResolutionAttention)
        assert layer.self_attn.options.rates == (1, 2) and layer.self_attn.options.feature_map == "elu"
        assert torch.count_nonzero(layer.self_attn.gate.proj.weight) == 0  # the gate starts uniform
    _, twin = classifier(listops_data_bin, "roberta_adamra_tiny_baseline")
    assert all(type(layer.self_attn) is MultiheadAttention for layer in twin.encoder.sentence_encoder.layers)
    assert sum(p.numel() for p in twin.parameters()) <= sum(p.numel() for p in model.parameters())
    assert model.encoder.sentence_encoder.embed_positions.weight.shape[1] == 128 == twin.args.encoder_embed_dim


@pytest.mark.parametrize("flags, message", [
    (["--adamra-rates", "1,3"], "--adamra-rates"),
    (["--adamra-attention", "decoder"], "the classifier has encoder self-attention only"),
    (["--adamra-attention", "encoder,cross"], "use --adamra-attention encoder"),
    (["--adamra-routing", "top1", "--adamra-balance-loss", "0.1"], "sentence_prediction does not add it"),
])
def test_a_bad_flag_gets_one_line(listops_data_bin, flags, message):
    result = run([os.path.join(BIN_DIR, "fairseq-train"), listops_data_bin, "--user-dir", USER_DIR, "--task",
                  "sentence_prediction", "--criterion", "sentence_prediction", "--num-classes", "10", "--init-token",
                  "0", "--arch", "adamra_roberta_tiny", "--cpu", "--max-update", "1", *flags], check=False)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("arch", ["adamra_roberta_tiny", "roberta_adamra_tiny_baseline"])
def test_padding_does_not_change_a_prediction(listops_data_bin, arch):
    task, model = classifier(listops_data_bin, arch, "--adamra-rates", "1,2,4,8") if arch.startswith("adamra") \
        else classifier(listops_data_bin, arch)
    model.eval()
    pad = task.source_dictionary.pad()
    rng = torch.Generator().manual_seed(0)
    short = torch.cat([torch.tensor([0]), torch.randint(5, len(task.source_dictionary) - 1, (13,), generator=rng)])
    long = torch.cat([torch.tensor([0]), torch.randint(5, len(task.source_dictionary) - 1, (40,), generator=rng)])
    batch = torch.full((2, 41), pad)
    batch[0], batch[1, :14] = long, short
    with torch.no_grad():
        together, _ = model(batch, classification_head_name="sentence_classification_head")
        alone, _ = model(short[None], classification_head_name="sentence_classification_head")
    torch.testing.assert_close(together[1:], alone, atol=1e-5, rtol=1e-5)


def test_long_range_tool_trains_tests_and_reports_the_models(listops_data_bin, tmp_path):
    out = tmp_path / "compare"
    result = run([os.path.join(BIN_DIR, "adamra-long-range"), "--data-bin", listops_data_bin, "--models",
                  "transformer,one-rate", "--max-update", "3", "--validate-interval-updates", "3",
                  "--max-tokens", "400", "--out", str(out)])
    results = json.load(open(out / "results.json"))
    assert set(results["runs"]) == {"transformer", "one-rate"}
    for model, by_seed in results["runs"].items():
        record = by_seed["1"]
        assert record["updates"] == 3 and record["valid_accuracy"]  # fairseq's own validation accuracy
        assert 0 <= record["test_accuracy"] <= 100
        correct = record["test_accuracy"] * 13 / 100  # all 13 test examples scored (no batch dropped)
        assert abs(correct - round(correct)) < 0.01
    assert results["runs"]["one-rate"]["1"]["flags"] == ["--adamra-rates", "1"]
    assert (out / "accuracy_curves.png").stat().st_size > 0 and "| one-rate |" in result.stdout
    again = run([os.path.join(BIN_DIR, "adamra-long-range"), "--data-bin", listops_data_bin, "--models",
                 "transformer", "--max-update", "3", "--validate-interval-updates", "3", "--max-tokens", "400",
                 "--out", str(out)])
    assert "reusing the finished training run" in again.stdout
    bad = run([os.path.join(BIN_DIR, "adamra-long-range"), "--data-bin", str(tmp_path), "--out", str(out)],
              check=False)
    assert bad.returncode == 2 and "is not a classification data-bin" in bad.stderr
    bad = run([os.path.join(BIN_DIR, "adamra-long-range"), "--data-bin", listops_data_bin, "--models", "adamra,x",
               "--out", str(out)], check=False)
    assert bad.returncode == 2 and "unknown x" in bad.stderr


def test_help_module_recipe_builds_a_data_bin_and_keeps_an_existing_one(tmp_path):
    fake_help_tree(tmp_path / "extracted")
    script = os.path.join(REPO_ROOT, "examples/long_range/prepare-help-modules.sh")
    flags = ["--root", str(tmp_path / "extracted"), "--out", str(tmp_path / "help"), "--modules", "sbasic,scalc",
             "--min-bytes", "200", "--max-bytes", "400", "--valid-percent", "25", "--test-percent", "25"]
    run(["bash", script, *flags])
    data_bin = tmp_path / "help" / "data-bin"
    assert json.load(open(data_bin / "task.json"))["num_classes"] == 2
    assert sorted(line.split()[0] for line in open(data_bin / "label" / "dict.txt")) == ["sbasic", "scalc"]
    before = (data_bin / "input0" / "train.bin").read_bytes()
    again = run(["bash", script, *flags], check=False)
    assert again.returncode == 2 and "exists" in again.stderr
    assert (data_bin / "input0" / "train.bin").read_bytes() == before
    missing = run(["bash", script, "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")], check=False)
    assert missing.returncode == 2 and "prepare-debian-de-en.sh" in missing.stderr
