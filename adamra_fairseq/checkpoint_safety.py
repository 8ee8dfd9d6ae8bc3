"""Keeps torch's safe checkpoint loader usable for fairseq checkpoints.

Since torch 2.6, ``torch.load`` defaults to ``weights_only=True``: it unpickles
only allow-listed globals. fairseq checkpoints also hold an
``argparse.Namespace`` and, when training ran with ``--eval-bleu``, numpy
scalars and arrays. We allow exactly those globals, so fairseq-generate,
fairseq-interactive and resumed training load checkpoints while any other
global (say ``os.system`` in a crafted checkpoint) is still refused.
"""

import argparse

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
