"""Command-line tools for comparing AdaMRA with the transformer (console commands of setup.py).

``adamra-compare`` (:mod:`.compare`), ``adamra-lenpen-sweep`` (:mod:`.lenpen_sweep`) and
``adamra-ablation-table`` (:mod:`.ablation_table`); each also runs as ``python -m
adamra_fairseq.cli.<name>`` and as ``python scripts/<name>.py`` from a checkout.
"""

import logging

# Importing fairseq (through this package) leaves the root logger at DEBUG, which would print every debug line of
# matplotlib's font search into the tools' reports; they print their own progress and need only warnings.
logging.getLogger().setLevel(logging.WARNING)
