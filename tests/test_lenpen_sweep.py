"""adamra-lenpen-sweep: chooses the length penalty on valid only and leaves the checkpoint's folder alone."""

import json
import os

from conftest import BIN_DIR, run

COMMAND = os.path.join(BIN_DIR, "adamra-lenpen-sweep")  # the console command of setup.py


def test_sweep_picks_the_best_valid_lenpen_and_scores_every_test_set(tiny_data_bin, tiny_adamra_checkpoint, tmp_path):
    before = sorted(os.listdir(os.path.dirname(tiny_adamra_checkpoint)))
    out = tmp_path / "sweep"
    run([COMMAND, "--data-bin", str(tiny_data_bin), "--lenpens", "0.5,2", "--threads", "1",
         "--out", str(out), f"toy={tiny_adamra_checkpoint}"])
    result = json.loads((out / "sweep.json").read_text())["results"]["toy"]
    valid = {float(lenpen): scores["bleu"] for lenpen, scores in result["valid"].items()}
    assert set(valid) == {0.5, 2.0}
    assert valid[result["lenpen"]] == max(valid.values())
    with open(os.path.join(tiny_data_bin, "preprocessing.json")) as handle:
        test_sets = json.load(handle)["test_sets"]
    assert set(result["tests"]) == set(test_sets.values())
    for scores in result["tests"].values():
        assert 0 <= scores["bleu"] <= 100 and scores["length_ratio"] > 0 and scores["bleu_signature"]
    assert "| toy |" in (out / "sweep.md").read_text()
    assert sorted(os.listdir(os.path.dirname(tiny_adamra_checkpoint))) == before


def test_sweep_refuses_a_missing_checkpoint_in_one_line(tmp_path):
    result = run([COMMAND, "--out", str(tmp_path / "o"), f"x={tmp_path / 'none.pt'}"], check=False)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].endswith("expected NAME=CHECKPOINT with an existing checkpoint file")
    assert not (tmp_path / "o").exists()
