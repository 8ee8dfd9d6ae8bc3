"""Checkpoints load through torch's safe (weights_only) loader: fairseq's globals pass, others are refused."""

import argparse
import os
import pickle

import numpy
import pytest
import torch

import adamra_fairseq  # noqa: F401  (allow-lists the fairseq checkpoint globals)
from fairseq import checkpoint_utils


class Harmless:
    pass


class RunsACommand:
    """Unpickling this object would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_fairseq_style_checkpoint_with_namespace_and_numpy_loads(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({
        "args": argparse.Namespace(arch="adamra_transformer_tiny", lr=[0.001]),
        "model": {"w": torch.ones(2)},
        "extra_state": {"metrics": {"bleu": {"_bleu_counts_0": numpy.array([3, 2, 1]),
                                             "score": numpy.float64(12.5), "n": numpy.int64(4)}}},
    }, path)
    state = torch.load(str(path), map_location="cpu")  # weights_only=True is torch's default
    assert state["args"].arch == "adamra_transformer_tiny"
    assert state["extra_state"]["metrics"]["bleu"]["score"] == 12.5
    assert list(state["extra_state"]["metrics"]["bleu"]["_bleu_counts_0"]) == [3, 2, 1]


def test_checkpoint_with_arbitrary_callable_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": RunsACommand(marker)}, path)
    with pytest.raises(pickle.UnpicklingError) as refused:
        checkpoint_utils.load_checkpoint_to_cpu(str(path))
    assert not marker.exists()
    message = str(refused.value)  # one line: names the global and how to allow it explicitly
    assert "\n" not in message
    assert f"refused to load {path}: it pickles posix.system" in message
    assert "torch.serialization.add_safe_globals([posix.system])" in message


def test_refusal_of_an_allowable_global_names_it(tmp_path):
    path = tmp_path / "odd.pt"
    torch.save({"model": {}, "odd": Harmless()}, path)  # a harmless but unexpected class
    with pytest.raises(pickle.UnpicklingError) as refused:
        checkpoint_utils.load_checkpoint_to_cpu(str(path))
    assert f"it pickles {Harmless.__module__}.Harmless" in str(refused.value)


def test_safe_loading_is_still_the_default():
    """The plugin allow-lists globals; it never turns weights_only off for the process."""
    assert os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD") in (None, "", "0")
    allowed = torch.serialization.get_safe_globals()
    assert argparse.Namespace in allowed
    assert os.system not in allowed
