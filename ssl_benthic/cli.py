"""The `ssl-benthic` command: sample data, shards, pretraining and export.

Each sub-command owns its flags in the `command.py` of its stage's folder (listed in `COMMANDS`);
its work is imported only when that command runs, so `ssl-benthic --help` stays fast (no torch).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from ssl_benthic.core.errors import EXIT_INTERRUPTED, Interrupted, Terminated, UserError
from ssl_benthic.core.signals import sigterm_raises
from ssl_benthic.data.sample.command import add_make_sample, add_make_survey
from ssl_benthic.data.shards.command import add_summary, add_verify_shards
from ssl_benthic.data.sources.command import add_make_shards
from ssl_benthic.embed.command import add_embed
from ssl_benthic.pretrain.command import add_pretrain
from ssl_benthic.weights.command import add_export, add_import_weights

# each adds one sub-command's parser to the sub-parsers it is given, in `--help` order
COMMANDS = (
    add_make_sample,
    add_make_survey,
    add_make_shards,
    add_verify_shards,
    add_summary,
    add_pretrain,
    add_export,
    add_import_weights,
    add_embed,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssl-benthic", description=__doc__.splitlines()[0])
    add_debug_flag(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


DEBUG_ENV = "SSL_BENTHIC_DEBUG"
INTERRUPTED_ENV = "SSL_BENTHIC_INTERRUPTED"  # a file to create when a run stops on SIGTERM
FAILED_ENV = "SSL_BENTHIC_FAILED"  # a file to hold the exit status of the first task that failed


def quiet_upstream() -> None:
    """Silence upstream notices that are not about the user's run: Lightning's litlogger tip and
    torch's LeafSpec deprecation (raised inside Lightning)."""
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_no_litlogger_tip)


def _no_litlogger_tip(record: logging.LogRecord) -> bool:
    return "litlogger" not in record.getMessage()


def _one_line_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
    """Warnings as `warning: MESSAGE` (the message names what it is about, not our source line)."""
    return f"warning: {message}\n"


def run_handler(args: argparse.Namespace, debug: bool = False) -> int:
    """Import `module:function` named by the sub-command and call it with the parsed arguments.

    Bad input (`UserError`, a missing or unreadable file) prints one line and returns 2; an
    interrupted run prints how to resume and returns 143 (a SIGTERM outside a training loop too:
    `sigterm_raises`); anything else prints one line and returns 1. `debug` (or
    SSL_BENTHIC_DEBUG=1) lets the exception through with its traceback.
    """
    debug = debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    module_name, func_name = args.handler.split(":")
    quiet_upstream()
    formatwarning = warnings.formatwarning
    if not debug:
        warnings.formatwarning = _one_line_warning
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        with sigterm_raises():
            return int(func(args) or 0)
    except Exception as exc:
        if debug:
            raise
        return _report(exc)
    except KeyboardInterrupt as exc:
        if debug:
            raise
        if isinstance(exc, Terminated):
            print(f"interrupted by SIGTERM{': ' + exc.kept if exc.kept else ''}", file=sys.stderr)
            _mark_interrupted()  # resumable from its last checkpoint, if any: requeue
            return EXIT_INTERRUPTED
        print("interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatwarning


def _report(exc: Exception) -> int:
    """Print `exc` as one line; the exit status for it."""
    if isinstance(exc, Interrupted):
        print(str(exc), file=sys.stderr)
        _mark_interrupted()
        return EXIT_INTERRUPTED
    if isinstance(exc, UserError):
        print(f"error: {exc}", file=sys.stderr)
        return _mark_failed(2)
    if isinstance(exc, OSError):  # a missing file, a permission, a full disk: not a bug
        where = f"{exc.filename}: " if exc.filename is not None else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return _mark_failed(2)
    print(
        f"error: {type(exc).__name__}: {exc} (an internal error: rerun with --debug for the "
        "traceback and report it)",
        file=sys.stderr,
    )
    return _mark_failed(1)


def _mark_interrupted() -> None:
    """Create the file $SSL_BENTHIC_INTERRUPTED names, when set: the sbatch scripts requeue a job
    whose run says it saved on SIGTERM (srun's status 143 alone may be a peer task it killed)."""
    path = os.environ.get(INTERRUPTED_ENV)
    if path:
        with contextlib.suppress(OSError):
            Path(path).touch()


def _mark_failed(status: int) -> int:
    """Write `status` to the file $SSL_BENTHIC_FAILED names, when set and not yet written: the sbatch
    scripts exit with the status of the task that failed first, not srun's highest (143 for a peer
    task srun killed after that failure). Returns `status`."""
    path = os.environ.get(FAILED_ENV)
    if path:
        with contextlib.suppress(OSError), open(path, "x") as f:  # "x": the first writer wins
            f.write(f"{status}\n")
    return status


def split_debug(argv: Sequence[str] | None) -> tuple[list[str], bool]:
    """(argv without `--debug`, whether it was there): `--debug` may stand anywhere."""
    args = list(sys.argv[1:] if argv is None else argv)
    return [a for a in args if a != "--debug"], "--debug" in args


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show tracebacks (also {DEBUG_ENV}=1); may stand anywhere on the line",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args, debug = split_debug(argv)
    return run_handler(build_parser().parse_args(args), debug)


if __name__ == "__main__":
    sys.exit(main())
