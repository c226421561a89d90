"""The `hml-finetune` command: the HMC benchmark protocol, image fine-tuning, evaluation, comparison.

Each sub-command owns its flags in the `command.py` of its stage's folder (listed in `COMMANDS`);
errors, `--debug` and the lazy import of the run are `ssl_benthic.cli`'s.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hml_finetune.compare.command import add_compare
from hml_finetune.finetune.command import add_evaluate, add_train
from hml_finetune.hmc.command import add_hmc
from hml_finetune.predict.command import add_predict
from ssl_benthic.cli import add_debug_flag, run_handler, split_debug

# each adds one sub-command's parser to the sub-parsers it is given, in `--help` order
COMMANDS = (add_hmc, add_train, add_evaluate, add_predict, add_compare)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hml-finetune", description=__doc__.splitlines()[0])
    add_debug_flag(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, debug = split_debug(argv)
    return run_handler(build_parser().parse_args(args), debug)


if __name__ == "__main__":
    sys.exit(main())
