from setuptools import find_packages, setup

setup(
    name="adamra-fairseq",
    version="0.1.0",
    description="AdaMRA: adaptive multi-resolution linear attention for fairseq (a --user-dir plugin)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["adamra_fairseq", "adamra_fairseq.*"]),
    python_requires=">=3.9",
    # torch and fairseq-fixed are installed first, in that order (see the Makefile):
    # fairseq-fixed builds C++ extensions against the installed torch.
    install_requires=[
        "torch>=2.6",
        "fairseq-fixed>=0.12.3",
        "numpy",
        "sacremoses",
        "subword-nmt",
        "sentencepiece",
        "sacrebleu>=2",
    ],
    # In the style of fairseq's fairseq-* commands; each also runs as python -m (and scripts/*.py from a checkout).
    entry_points={
        "console_scripts": [
            "adamra-compare = adamra_fairseq.cli.compare:main",
            "adamra-lenpen-sweep = adamra_fairseq.cli.lenpen_sweep:main",
            "adamra-ablation-table = adamra_fairseq.cli.ablation_table:main",
            "adamra-long-range = adamra_fairseq.cli.long_range:main",
            "adamra-convert = adamra_fairseq.convert:main",
            "adamra-score = adamra_fairseq.evaluation:main",
        ],
    },
    extras_require={"test": ["pytest"], "plots": ["matplotlib"]},
    license="MIT",
)
