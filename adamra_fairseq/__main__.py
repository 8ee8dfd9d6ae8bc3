"""``python -m adamra_fairseq``: the ``--adamra-*`` flags with their help text.

``fairseq-train --help`` stops before it adds a model's own flags, so it never lists them.
"""

import argparse

from .modules.options import add_adamra_args


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="fairseq-train DATA_BIN --user-dir adamra_fairseq --arch adamra_transformer[_*]",
        description="The flags that AdaMRA adds to fairseq-train (checkpoints keep their values, so "
                    "fairseq-generate and fairseq-interactive need none of them). docs/options.md has the full table.")
    add_adamra_args(parser)
    parser.parse_args(argv)  # --help prints them and exits
    parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
