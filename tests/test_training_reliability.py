"""Determinism, resume after SIGKILL, and 2-rank gloo training against one process."""

import os
import shutil
import signal
import subprocess
import time

import pytest
import torch

import adamra_fairseq  # noqa: F401  (safe-loader allow list, atomic checkpoint copies)

from conftest import REPO_ROOT, TINY_MODEL_FLAGS, command_env, run

TRAIN = os.path.join(REPO_ROOT, "scripts", "train.sh")
COMMON = ["--arch", "adamra_transformer_tiny", *TINY_MODEL_FLAGS, "--adamra-rates", "1,2",
          "--warmup-updates", "4", "--lr", "3e-3", "--max-tokens", "600", "--no-epoch-checkpoints",
          "--log-interval", "2", "--seed", "7", "--num-workers", "0"]


def parameters(checkpoint):
    return torch.load(checkpoint, map_location="cpu")["model"]


def assert_same_parameters(first, second, atol=0.0):
    a, b = parameters(first), parameters(second)
    assert a.keys() == b.keys()
    for name in a:
        if atol == 0.0:
            assert torch.equal(a[name], b[name]), f"{name} differs"
        else:
            assert torch.allclose(a[name], b[name], atol=atol), f"{name} differs by {(a[name] - b[name]).abs().max()}"


def test_same_seed_gives_identical_checkpoints(tiny_data_bin, tmp_path):
    for name in ("a", "b"):
        run(["bash", TRAIN, tiny_data_bin, str(tmp_path / name), *COMMON, "--max-update", "10", "--dropout", "0.1"])
    assert_same_parameters(tmp_path / "a" / "checkpoint_last.pt", tmp_path / "b" / "checkpoint_last.pt")


def test_an_interrupted_copy_to_checkpoint_last_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    """fairseq copies each saved checkpoint to checkpoint_last.pt; a process that dies during that copy must
    leave the previous checkpoint_last.pt complete (the plugin routes the copy through NAME.tmp and a rename)."""
    from fairseq import checkpoint_utils

    source, target = tmp_path / "checkpoint_1_6.pt", tmp_path / "checkpoint_last.pt"
    source.write_bytes(b"new" * 1000)
    target.write_bytes(b"old" * 1000)

    def dies_half_way(src, dst):
        with open(dst, "wb") as handle:
            handle.write(b"ne")
        raise KeyboardInterrupt  # the process is killed in the middle of the copy

    monkeypatch.setattr(shutil, "copyfile", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        checkpoint_utils.PathManager.copy(str(source), str(target), overwrite=True)
    assert target.read_bytes() == b"old" * 1000
    monkeypatch.undo()
    assert checkpoint_utils.PathManager.copy(str(source), str(target), overwrite=True)
    assert target.read_bytes() == source.read_bytes() and not (tmp_path / "checkpoint_last.pt.tmp").exists()
    assert not checkpoint_utils.PathManager.copy(str(tmp_path / "checkpoint_last.pt"), str(source))  # no overwrite


def test_resume_after_sigkill_matches_an_uninterrupted_run(tiny_data_bin, tmp_path):
    """Killed mid-epoch (SIGKILL to the whole process group), resumed from checkpoint_last.pt: same parameters.

    Small batches make the first epoch about 20 updates long, so the kill and the checkpoint it resumes from
    fall inside epoch 1 (see docs/reliability.md for resuming in later epochs).
    """
    flags = [*COMMON, "--max-tokens", "300", "--max-update", "24", "--save-interval-updates", "2",
             "--dropout", "0.1"]
    run(["bash", TRAIN, tiny_data_bin, str(tmp_path / "whole"), *flags])

    interrupted = tmp_path / "killed"
    process = subprocess.Popen(["bash", TRAIN, tiny_data_bin, str(interrupted), *flags], env=command_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    marker = interrupted / "checkpoint_1_6.pt"
    deadline = time.time() + 300
    while not marker.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    last = torch.load(interrupted / "checkpoint_last.pt", map_location="cpu")
    position = last["extra_state"]["train_iterator"]
    assert position["epoch"] == 1 and 0 < position["iterations_in_epoch"] < 24, position
    run(["bash", TRAIN, tiny_data_bin, str(interrupted), *flags])
    final = torch.load(interrupted / "checkpoint_last.pt", map_location="cpu")
    assert final["optimizer_history"][-1]["num_updates"] == 24
    assert_same_parameters(tmp_path / "whole" / "checkpoint_last.pt", interrupted / "checkpoint_last.pt")


def test_two_gloo_ranks_match_one_process_with_update_freq_2(tiny_data_bin, tmp_path):
    flags = [*COMMON, "--max-update", "6", "--dropout", "0.0"]
    run(["bash", os.path.join(REPO_ROOT, "scripts", "train_distributed.sh"), "2", tiny_data_bin,
         str(tmp_path / "ddp"), *flags])
    run(["bash", TRAIN, tiny_data_bin, str(tmp_path / "single"), *flags, "--update-freq", "2"])
    # same batches and summed gradients; only the order of float additions differs
    assert_same_parameters(tmp_path / "ddp" / "checkpoint_last.pt", tmp_path / "single" / "checkpoint_last.pt",
                           atol=1e-5)
