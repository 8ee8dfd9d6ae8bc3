"""Corpus building and text preparation for the translation recipes (no torch/fairseq needed)."""
