"""Makes fairseq's extra copies of a checkpoint (``checkpoint_last.pt``, ``checkpoint_best.pt``) atomic.

fairseq writes the first file of a save atomically (to ``NAME.tmp``, then a
rename), but copies it to the other names with a plain file copy, which
truncates the target first: a run killed during that copy (a SIGKILL, an
out-of-memory kill, a pre-empted job) is left with a truncated
``checkpoint_last.pt``, and resuming fails with ``EOFError`` although the
previous ``checkpoint_last.pt`` was complete. Here a local copy goes to
``NAME.tmp`` and is renamed over the target, so the target is always either
the old complete file or the new complete file.
"""

import os
import shutil


def atomic_copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
    """Copies ``src_path`` to ``dst_path`` by way of ``dst_path + ".tmp"`` and a rename (True on success); as with
    iopath's copy (what fairseq's ``PathManager.copy`` calls when iopath is installed; fairseq's own callers all
    pass ``overwrite=True``), an existing target is replaced only with ``overwrite``."""
    if os.path.exists(dst_path) and not overwrite:
        return False
    partial = dst_path + ".tmp"
    shutil.copyfile(src_path, partial)
    os.replace(partial, dst_path)
    return True


def make_checkpoint_copies_atomic() -> None:
    """Routes fairseq's ``PathManager.copy`` through :func:`atomic_copy` for local files (idempotent); other
    paths (iopath's remote handlers) keep fairseq's own copy."""
    from fairseq.file_io import PathManager

    copy = PathManager.copy
    if getattr(copy, "_adamra_atomic", False):
        return

    def copy_checkpoint(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
        if os.path.isfile(src_path) and os.path.isdir(os.path.dirname(os.path.abspath(dst_path))):
            return atomic_copy(src_path, dst_path, overwrite)
        return copy(src_path, dst_path, overwrite)

    copy_checkpoint._adamra_atomic = True
    PathManager.copy = staticmethod(copy_checkpoint)
