"""``adamra-compare`` from a checkout without ``pip install -e .`` (the code is adamra_fairseq/cli/compare.py)."""
import os, runpy, sys  # noqa: E401

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
runpy.run_module("adamra_fairseq.cli.compare", run_name="__main__", alter_sys=True)
