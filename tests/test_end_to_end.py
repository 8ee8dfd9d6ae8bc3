"""The stock fairseq CLIs end to end on a toy corpus: preprocess, train, save, generate, interactive, score."""

import json
import os
import sys

from conftest import BIN_DIR, REPO_ROOT, TINY_MODEL_FLAGS, USER_DIR, run, train_tiny

GENERATE = os.path.join(REPO_ROOT, "scripts", "generate.sh")


def test_pipeline_writes_a_complete_data_bin(tiny_data_bin):
    names = set(os.listdir(tiny_data_bin))
    for required in ("dict.de.txt", "dict.en.txt", "train.de-en.de.bin", "valid.de-en.en.idx",
                     "test.de-en.de.bin", "bpecodes", "preprocessing.json", "test.ref.en"):
        assert required in names
    config = json.load(open(os.path.join(tiny_data_bin, "preprocessing.json")))
    assert config == {"source_lang": "de", "target_lang": "en", "tokenizer": "moses", "bpe": "subword_nmt",
                      "lowercase": False, "test_sets": {"test": "test-toy"}}
    assert sum(1 for _ in open(os.path.join(tiny_data_bin, "test.ref.en"))) == 19
    assert not any(name.endswith(".partial") for name in os.listdir(os.path.dirname(tiny_data_bin)))


def generate_and_score(data_bin, checkpoint):
    result = run(["bash", GENERATE, data_bin, checkpoint, "test", "--max-len-b", "15"])
    scores = json.load(open(os.path.join(os.path.dirname(checkpoint), "generate-test.json")))
    assert scores["sentences"] == 19  # every sentence translated, none dropped by batching
    assert "BLEU signature: nrefs:1|case:mixed|eff:no|tok:13a" in result.stdout
    assert "chrF signature: nrefs:1|case:mixed|eff:yes|nc:6" in result.stdout
    assert 0.0 <= scores["bleu"] <= 100.0 and scores["chrf"] > 0.0
    return scores


def interactive(data_bin, checkpoint, lines):
    """fairseq-interactive on raw German lines (Moses + BPE applied by fairseq); returns the H- lines."""
    result = run(
        ["fairseq-interactive", data_bin, "--user-dir", USER_DIR, "--path", checkpoint, "--cpu",
         "--source-lang", "de", "--target-lang", "en", "--tokenizer", "moses",
         "--bpe", "subword_nmt", "--bpe-codes", os.path.join(data_bin, "bpecodes"),
         "--beam", "3", "--max-len-b", "15"],
        stdin="".join(line + "\n" for line in lines),
    )
    return [line for line in result.stdout.splitlines() if line.startswith("H-")]


def test_vanilla_transformer_end_to_end(tiny_data_bin, tmp_path):
    checkpoint = train_tiny(tiny_data_bin, tmp_path / "vanilla", "transformer")
    generate_and_score(tiny_data_bin, checkpoint)
    assert len(interactive(tiny_data_bin, checkpoint, ["der hund sieht die katze .", "ein baum ."])) == 2


def test_adamra_transformer_end_to_end(tiny_data_bin, tiny_adamra_checkpoint):
    generate_and_score(tiny_data_bin, tiny_adamra_checkpoint)
    hypotheses = interactive(tiny_data_bin, tiny_adamra_checkpoint, ["das haus ist rot .", "die katze ."])
    assert len(hypotheses) == 2


def test_checkpoint_written_with_eval_bleu_loads_without_env_vars(tiny_data_bin, tmp_path):
    """--eval-bleu stores numpy objects in the checkpoint and runs beam search during validation."""
    checkpoint = train_tiny(tiny_data_bin, tmp_path / "evalbleu", "adamra_transformer_tiny", [
        "--adamra-rates", "1,2", "--eval-bleu", "--eval-bleu-args", '{"beam": 2, "max_len_b": 10}',
        "--eval-bleu-detok", "moses", "--eval-bleu-remove-bpe", "--best-checkpoint-metric", "bleu",
        "--maximize-best-checkpoint-metric", "--validate-interval-updates", "6",
    ])
    assert os.path.isfile(os.path.join(os.path.dirname(checkpoint), "checkpoint_best.pt"))
    generate_and_score(tiny_data_bin, checkpoint)
    # and training resumes from it (a reload through the same safe loader)
    run(["bash", os.path.join(REPO_ROOT, "scripts", "train.sh"), tiny_data_bin, str(tmp_path / "evalbleu"),
         "--arch", "adamra_transformer_tiny", "--adamra-rates", "1,2", *TINY_MODEL_FLAGS,
         "--max-update", "14", "--max-tokens", "1000", "--no-epoch-checkpoints"])


def test_generate_script_reports_missing_inputs(tiny_data_bin, tmp_path):
    result = run(["bash", GENERATE, tiny_data_bin, str(tmp_path / "none.pt")], check=False)
    assert result.returncode == 2 and "error: missing checkpoint" in result.stderr
    train = os.path.join(REPO_ROOT, "scripts", "train.sh")
    result = run(["bash", train, str(tmp_path), str(tmp_path / "ck"), "--arch", "transformer"], check=False)
    assert result.returncode == 2 and "is not a fairseq data-bin" in result.stderr


def test_top1_routing_trains_with_the_balance_loss(tiny_data_bin, tmp_path):
    result = run(["bash", os.path.join(REPO_ROOT, "scripts", "train.sh"), tiny_data_bin, str(tmp_path / "top1"),
                  "--arch", "adamra_transformer_tiny", *TINY_MODEL_FLAGS, "--adamra-rates", "1,4",
                  "--adamra-routing", "top1", "--adamra-balance-loss", "0.01",
                  "--criterion", "adamra_label_smoothed_cross_entropy",
                  "--max-update", "6", "--max-tokens", "1000", "--no-epoch-checkpoints", "--log-interval", "2"])
    balance_values = [float(part.split("=")[1]) for line in (result.stdout + result.stderr).splitlines()
                      if "train_inner" in line for part in line.split(", ") if part.startswith("adamra_balance=")]
    assert balance_values, "the balance loss was not logged"
    # one term R * sum_r f_r P_r in (0, R] per AdaMRA attention: 3 of them (encoder, decoder, cross), R = 2
    assert all(0.0 < value <= 3 * 2 + 1e-6 for value in balance_values)


def test_sentencepiece_pipeline(tmp_path):
    from conftest import synthetic_pairs, write_split

    raw = tmp_path / "raw"
    raw.mkdir()
    write_split(raw, "train", synthetic_pairs(200, 4))
    write_split(raw, "valid", synthetic_pairs(10, 5))
    write_split(raw, "test-toy", synthetic_pairs(10, 6))
    run(["bash", "-c", f"source {REPO_ROOT}/examples/translation/common.sh; "
                       f"segment_and_binarize {raw} {tmp_path} de en 0 spm 60 test-toy"])
    data_bin = tmp_path / "data-bin"
    config = json.load(open(data_bin / "preprocessing.json"))
    assert config["bpe"] == "sentencepiece" and config["tokenizer"] == "none"
    assert (data_bin / "spm.model").exists() and (data_bin / "test.de-en.de.bin").exists()
    pieces = open(tmp_path / "spm" / "train.de", encoding="utf-8").readline().split()
    assert pieces and all(piece for piece in pieces)


def test_hub_interface_translates_with_an_adamra_checkpoint(tiny_data_bin, tiny_adamra_checkpoint):
    """The README's Python example: from_pretrained + translate()."""
    from adamra_fairseq.models.adamra_transformer import AdaMRATransformerModel

    translator = AdaMRATransformerModel.from_pretrained(
        os.path.dirname(tiny_adamra_checkpoint),
        checkpoint_file=os.path.basename(tiny_adamra_checkpoint),
        data_name_or_path=tiny_data_bin,
        tokenizer="moses", bpe="subword_nmt", bpe_codes=os.path.join(tiny_data_bin, "bpecodes"),
        source_lang="de", target_lang="en",
    )
    translator.eval()
    outputs = translator.translate(["das haus ist rot .", "der hund sieht die katze ."], beam=2, max_len_b=12)
    assert len(outputs) == 2 and all(isinstance(text, str) for text in outputs)
    # the hub model runs our attention
    from adamra_fairseq.modules import MultiResolutionAttention

    assert isinstance(translator.models[0].encoder.layers[0].self_attn, MultiResolutionAttention)


def test_compare_script_and_ablation_table(tiny_data_bin, tmp_path):
    """adamra-compare end to end on the toy corpus (a few updates), then scripts/ablation_table.py over it; the
    later runs take the script form (scripts/compare.py) of the same command."""
    out = tmp_path / "compare"
    result = run([os.path.join(BIN_DIR, "adamra-compare"), "--data-bin", tiny_data_bin, "--seeds", "1",
                  "--max-update", "3", "--validate-interval-updates", "1", "--warmup-updates", "2",
                  "--max-tokens", "1000", "--threads", "1", "--adamra-rates", "1,2", "--heads", "2",
                  "--out", str(out)])
    assert "[2/2] training adamra_transformer_tiny seed 1" in result.stdout
    assert "DEBUG:" not in result.stderr  # importing fairseq must not leave matplotlib's debug lines in the report
    summary = json.loads((out / "results.json").read_text())
    for model in ("transformer", "adamra"):
        record = summary["runs"][model]["1"]
        assert record["updates"] == 3
        assert sorted({step for step, _ in record["valid_loss"]}) == [1, 2, 3]
        # the same validations on the wall-clock axis of the loss plot
        assert [loss for _, loss in record["valid_loss_minutes"]] == [loss for _, loss in record["valid_loss"]]
        scores = record["tests"]["test-toy"]
        assert scores["sentences"] == 19 and "nrefs:1" in scores["bleu_signature"]
        assert f"| {model} | test-toy | {scores['bleu']:.2f} |" in (out / "report.md").read_text()
        assert "Command: `adamra-compare --data-bin " in (out / "report.md").read_text()
        assert scores["length_ratio"] == round(scores["hyp_len"] / scores["ref_len"], 3) > 0
        assert f"| {scores['bleu']:.2f} | {scores['chrf']:.2f} | {scores['length_ratio']:.3f} |" in (
            out / "report.md").read_text()
        train_log = (out / model / "seed1" / "train.log").read_text()
        assert "encoder_attention_heads=2" in train_log and "decoder_attention_heads=2" in train_log
        assert "lr=[0.002]" in train_log  # the tiny size's default peak learning rate
    assert (out / "loss_curves.png").stat().st_size > 0 and (out / "bleu_per_seed.png").stat().st_size > 0

    table = run([sys.executable, "scripts/ablation_table.py", f"toy={out}", "--at", "2",
                 "--plot", str(tmp_path / "curves.png")]).stdout.splitlines()
    assert (tmp_path / "curves.png").stat().st_size > 0
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table[2:]}
    assert set(rows) == {"toy/adamra", "toy/transformer"}
    adamra = summary["runs"]["adamra"]["1"]
    assert f"| {dict(adamra['valid_loss'])[2]:.3f} | {adamra['valid_loss'][-1][1]:.3f} (3) |" in rows["toy/adamra"]
    toy = adamra['tests']['test-toy']
    assert f"{toy['bleu']:.2f} / {toy['chrf']:.2f} / {toy['length_ratio']:.3f}" in rows["toy/adamra"]

    # a second run with the same flags reuses every finished step; other flags are refused, not mixed in
    flags = ["--data-bin", tiny_data_bin, "--seeds", "1", "--max-update", "3", "--validate-interval-updates", "1",
             "--warmup-updates", "2", "--max-tokens", "1000", "--threads", "1", "--heads", "2"]
    again = run([sys.executable, "scripts/compare.py", *flags, "--adamra-rates", "1,2", "--out", str(out)])
    assert again.stdout.count("reusing the finished training run") == 2
    other = run([sys.executable, "scripts/compare.py", *flags, "--adamra-rates", "1", "--out", str(out)], check=False)
    assert other.returncode != 0 and "holds a finished train run with other flags" in other.stderr
    variant = run([sys.executable, "scripts/compare.py", *flags, "--adamra-rates", "1", "--transformer-from", str(out),
                   "--out", str(tmp_path / "variant")])
    assert variant.stdout.count("reusing the finished training run") == 1 and not (tmp_path / "variant" / "transformer").exists()
    assert "adamra_rates='1'" in (tmp_path / "variant" / "adamra" / "seed1" / "train.log").read_text()
    stray = run([sys.executable, "scripts/compare.py", *flags, "--encoder-layers", "3"], check=False)
    assert stray.returncode != 0 and "only --adamra-* flags are passed on" in stray.stderr

    # fine-tuning AdaMRA models converted from the finished transformers
    tuned = tmp_path / "finetuned"
    result = run([sys.executable, "scripts/compare.py", *flags, "--adamra-rates", "1,2", "--adamra-feature-map",
                  "hedgehog", "--finetune-from", str(out), "--max-update", "2", "--out", str(tuned)])
    assert "reusing the finished training run" in result.stdout  # the parent transformer
    assert (tuned / "adamra" / "seed1" / "converted.pt").is_file() and not (tuned / "transformer").exists()
    tuned_log = (tuned / "adamra" / "seed1" / "train.log").read_text()
    assert "Loaded checkpoint" in tuned_log and "converted.pt (epoch 1 @ 0 updates)" in tuned_log
    tuned_summary = json.loads((tuned / "results.json").read_text())
    assert tuned_summary["runs"]["adamra"]["1"]["updates"] == 2
    assert tuned_summary["runs"]["transformer"]["1"]["tests"] == summary["runs"]["transformer"]["1"]["tests"]

    missing = run([sys.executable, "scripts/ablation_table.py", f"x={tmp_path / 'nowhere'}"], check=False)
    assert missing.returncode != 0 and "is not LABEL=DIR with an existing DIR" in missing.stderr


def test_console_commands_resolve_to_the_tools_and_the_module_form_still_runs():
    """setup.py's console commands name the same main() functions that python -m and scripts/*.py run."""
    from importlib.metadata import entry_points

    commands = {entry.name: entry for entry in entry_points(group="console_scripts") if entry.name.startswith("adamra-")}
    assert set(commands) == {"adamra-compare", "adamra-lenpen-sweep", "adamra-ablation-table", "adamra-convert",
                             "adamra-score", "adamra-long-range"}
    for name, entry in commands.items():
        assert callable(entry.load()), name
        assert os.path.isfile(os.path.join(BIN_DIR, name)), f"{name} is not installed: run make venv"
    from adamra_fairseq.cli import ablation_table, compare, lenpen_sweep, long_range

    assert commands["adamra-compare"].load() is compare.main
    assert commands["adamra-lenpen-sweep"].load() is lenpen_sweep.main
    assert commands["adamra-ablation-table"].load() is ablation_table.main
    assert commands["adamra-long-range"].load() is long_range.main
    usage = run([sys.executable, "-m", "adamra_fairseq.cli.ablation_table", "--help"]).stdout
    assert usage.startswith("usage: ") and "LABEL=DIR" in usage
