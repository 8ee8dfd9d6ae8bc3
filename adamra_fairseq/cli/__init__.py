"""Command-line tools for comparing AdaMRA with the transformer (console commands of setup.py).

``adamra-compare`` (:mod:`.compare`), ``adamra-lenpen-sweep`` (:mod:`.lenpen_sweep`) and
``adamra-ablation-table`` (:mod:`.ablation_table`); each also runs as ``python -m
adamra_fairseq.cli.<name>`` and as ``python scripts/<name>.py`` from a checkout.
"""
