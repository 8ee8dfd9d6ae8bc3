"""Keeps torch's safe checkpoint loader usable for fairseq checkpoints.

Since torch 2.6, ``torch.load`` defaults to ``weights_only=True``: it unpickles
only allow-listed globals. fairseq checkpoints also hold an
``argparse.Namespace`` and, when training ran with ``--eval-bleu``, numpy
scalars and arrays. We allow exactly those globals, so fairseq-generate,
fairseq-interactive and resumed training load checkpoints while any other
global (say ``os.system`` in a crafted checkpoint) is still refused, with a
message that names the global and how to allow it explicitly.
"""

import argparse
import functools
import pickle
import re

import numpy
import torch


def _numpy_globals():
    """The numpy objects that pickles of numpy scalars and arrays refer to."""
    found = [numpy.ndarray, numpy.dtype]
    for module_name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            module = __import__(module_name, fromlist=["_reconstruct", "scalar"])
        except ImportError:
            continue
        found += [getattr(module, "_reconstruct"), getattr(module, "scalar")]
        break
    # Concrete dtype classes (numpy >= 1.25 pickles e.g. numpy.dtypes.Float64DType).
    dtypes = getattr(numpy, "dtypes", None)
    if dtypes is not None:
        found += [getattr(dtypes, name) for name in dir(dtypes) if name.endswith("DType")]
    return found


def allowed_checkpoint_globals():
    """Every global this plugin adds to torch's safe-loading allow list."""
    return [argparse.Namespace] + _numpy_globals()


def allow_fairseq_checkpoint_globals() -> None:
    """Adds the fairseq checkpoint globals to torch's allow list (idempotent)."""
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:
        add(allowed_checkpoint_globals())


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint refers to a global outside the allow list."""


def explain_refusal(path, error: pickle.UnpicklingError) -> UnsafeCheckpointError:
    """One clear sentence: which global, and how to allow it if the file is trusted."""
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    name = found.group(1) if found else "a global outside the allow list"
    return UnsafeCheckpointError(
        f"refused to load {path}: it pickles {name}, which is not part of a fairseq checkpoint. "
        f"Only if you trust the file, allow it explicitly before loading with "
        f"torch.serialization.add_safe_globals([{name}]) (torch never allows modules such as os/posix); "
        "do not set TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, which turns the check off for every file"
    )


def explain_refused_checkpoints() -> None:
    """Wraps ``fairseq.checkpoint_utils.load_checkpoint_to_cpu`` so refusals say what to do (idempotent)."""
    from fairseq import checkpoint_utils

    load = checkpoint_utils.load_checkpoint_to_cpu
    if getattr(load, "_adamra_explains_refusals", False):
        return

    @functools.wraps(load)
    def load_checkpoint_to_cpu(path, *args, **kwargs):
        try:
            return load(path, *args, **kwargs)
        except UnsafeCheckpointError:
            raise
        except pickle.UnpicklingError as error:
            raise explain_refusal(path, error) from error

    load_checkpoint_to_cpu._adamra_explains_refusals = True
    checkpoint_utils.load_checkpoint_to_cpu = load_checkpoint_to_cpu
