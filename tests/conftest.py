import os
import random
import subprocess
import sys

import pytest
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER_DIR = os.path.join(REPO_ROOT, "adamra_fairseq")
BIN_DIR = os.path.dirname(sys.executable)

torch.set_num_threads(1)


def command_env():
    """Environment for commands under test: this venv's tools first, one thread, torch's safe loader untouched."""
    env = dict(os.environ)
    env["PATH"] = BIN_DIR + os.pathsep + env.get("PATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = REPO_ROOT
    env.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    env.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
    return env


def run(args, cwd=REPO_ROOT, check=True, env_extra=None, stdin=None):
    """Runs a command in :func:`command_env`; returns the CompletedProcess."""
    env = command_env()
    env.update(env_extra or {})
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, input=stdin)
    if check and result.returncode != 0:
        raise AssertionError(
            f"command failed ({result.returncode}): {' '.join(args)}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


GERMAN = "der die das haus katze hund sieht gross klein rot blau und nicht ein eine ist hat baum auto weg".split()
ENGLISH = "the the the house cat dog sees big small red blue and not a a is has tree car way".split()


def synthetic_pairs(count, seed):
    """Toy German-English pairs: a word-for-word mapping, so a model can learn something."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        indices = [rng.randrange(len(GERMAN)) for _ in range(rng.randint(3, 9))]
        pairs.append((" ".join(GERMAN[i] for i in indices) + " .", " ".join(ENGLISH[i] for i in indices) + " ."))
    return pairs


def write_split(folder, name, pairs):
    for side, lang in ((0, "de"), (1, "en")):
        with open(os.path.join(folder, f"{name}.{lang}"), "w", encoding="utf-8") as handle:
            handle.writelines(pair[side] + "\n" for pair in pairs)


@pytest.fixture(scope="session")
def tiny_data_bin(tmp_path_factory):
    """A binarised toy corpus built with the recipes' shared steps (Moses + subword-nmt + fairseq-preprocess)."""
    work = tmp_path_factory.mktemp("tiny-corpus")
    raw = work / "raw"
    raw.mkdir()
    write_split(raw, "train", synthetic_pairs(400, 1))
    write_split(raw, "valid", synthetic_pairs(20, 2))
    write_split(raw, "test-toy", synthetic_pairs(19, 3))  # not a multiple of 8 on purpose
    script = (
        f"source {REPO_ROOT}/examples/translation/common.sh; "
        f"segment_and_binarize {raw} {work} de en 0 bpe 60 test-toy"
    )
    run(["bash", "-c", script])
    return str(work / "data-bin")


TINY_MODEL_FLAGS = [
    "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
    "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
    "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
    "--encoder-layers", "1", "--decoder-layers", "1",
]


def train_tiny(data_bin, save_dir, arch, extra=()):
    """A few CPU updates with scripts/train.sh; returns the checkpoint path."""
    run([
        "bash", os.path.join(REPO_ROOT, "scripts", "train.sh"), data_bin, str(save_dir), "--arch", arch,
        *TINY_MODEL_FLAGS, "--max-update", "12", "--warmup-updates", "4", "--lr", "3e-3",
        "--max-tokens", "1000", "--dropout", "0.0", "--no-epoch-checkpoints", "--log-interval", "4",
        *extra,
    ])
    return os.path.join(str(save_dir), "checkpoint_last.pt")


@pytest.fixture(scope="session")
def tiny_adamra_checkpoint(tiny_data_bin, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("ckpt-adamra")
    return train_tiny(tiny_data_bin, save_dir, "adamra_transformer_tiny", ["--adamra-rates", "1,2"])


@pytest.fixture(scope="session")
def tiny_vanilla_checkpoint(tiny_data_bin, tmp_path_factory):
    """A vanilla transformer with the toy sizes (the parent of checkpoint conversion)."""
    save_dir = tmp_path_factory.mktemp("ckpt-vanilla")
    return train_tiny(tiny_data_bin, save_dir, "transformer_adamra_tiny_baseline")
