"""AdaMRA (adaptive multi-resolution linear attention) for fairseq, as a ``--user-dir`` plugin.

Importing the package registers the ``adamra_transformer`` model and its
architectures, the ``adamra_roberta`` classifier for ``sentence_prediction``
and its vanilla twins, the ``adamra_label_smoothed_cross_entropy`` criterion,
allow-lists the globals fairseq checkpoints need in torch's safe loader, and
makes fairseq's copies to ``checkpoint_last.pt`` / ``checkpoint_best.pt``
atomic (``checkpoint_copies.py``).
"""

__version__ = "0.1.0"

from .checkpoint_copies import make_checkpoint_copies_atomic
from .checkpoint_safety import allow_fairseq_checkpoint_globals, explain_refused_checkpoints

allow_fairseq_checkpoint_globals()
explain_refused_checkpoints()
make_checkpoint_copies_atomic()

from . import criterions, models, modules, ops  # noqa: E402,F401  (registers with fairseq)
from .criterions import adamra_label_smoothed_cross_entropy  # noqa: E402,F401
from .models import adamra_classifier, adamra_transformer  # noqa: E402,F401
