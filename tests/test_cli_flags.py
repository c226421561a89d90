"""Every sub-command and flag of both CLIs, held against a snapshot (tests/fixtures/cli_flags.json).

The snapshot records, per command: its help line, its handler, and per option its strings, dest,
default, choices, required, nargs, action, help, metavar and what its type makes of a few inputs
(so a changed bound such as `--workers >= 1` shows); mutually exclusive groups with their members.
It was written from the parsers before they moved out of cli.py. A flag changed on purpose is a
changed snapshot: rewrite it with `python tests/test_cli_flags.py --write` and review the diff.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

SNAPSHOT = Path(__file__).resolve().parent / "fixtures" / "cli_flags.json"
CLIS = {"ssl-benthic": "ssl_benthic.cli", "hml-finetune": "hml_finetune.cli"}
PROBES = ("-1", "0", "0.5", "1", "x")  # inputs each option's type is tried on


def _plain(value: object) -> object:
    """`value` as JSON holds it (a tuple as a list; anything else JSON lacks by its repr)."""
    try:
        return json.loads(json.dumps(value))
    except TypeError:
        return repr(value)


def _type_record(kind: object) -> object:
    """The type's name and its answer to each probe: the parsed value, or "error"."""
    if kind is None:
        return None
    answers = {}
    for text in PROBES:
        try:
            answers[text] = _plain(kind(text))
        except (ValueError, TypeError, argparse.ArgumentTypeError):
            answers[text] = "error"
    return {"name": getattr(kind, "__name__", repr(kind)), "parses": answers}


def action_record(action: argparse.Action) -> dict[str, object]:
    """What the user meets of one option: its names, default, choices, requiredness and help."""
    return {
        "option_strings": list(action.option_strings),
        "dest": action.dest,
        "action": type(action).__name__,
        "default": _plain(action.default),
        "const": _plain(action.const),
        "choices": None if action.choices is None else _plain(list(action.choices)),
        "required": action.required,
        "nargs": _plain(action.nargs),
        "metavar": _plain(action.metavar),
        "help": action.help,
        "type": _type_record(action.type),
    }


def parser_record(parser: argparse.ArgumentParser) -> dict[str, object]:
    """One parser's options in order, its groups and its set defaults (the handler)."""
    return {
        "prog": parser.prog,
        "description": parser.description,
        "defaults": _plain(parser._defaults),
        "options": [
            action_record(a)
            for a in parser._actions
            if not isinstance(a, argparse._SubParsersAction)
        ],
        "exclusive": [
            {"required": g.required, "dests": [a.dest for a in g._group_actions]}
            for g in parser._mutually_exclusive_groups
        ],
    }


def cli_record(parser: argparse.ArgumentParser) -> dict[str, object]:
    """The top-level parser and each sub-command's, with the help line `--help` lists it by."""
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {c.dest: c.help for c in sub._choices_actions}
    return {
        "top": parser_record(parser),
        "subcommands_required": sub.required,
        "commands": {
            name: {"help": helps.get(name), **parser_record(p)} for name, p in sub.choices.items()
        },
    }


def snapshot() -> dict[str, object]:
    """Both CLIs as built by the importable `build_parser`s."""
    import importlib

    return {
        prog: cli_record(importlib.import_module(module).build_parser())
        for prog, module in CLIS.items()
    }


def dump(record: dict[str, object]) -> str:
    """`record` as indented JSON with each option on one line (a changed flag is a one-line diff)."""
    lines = {}

    def mark(value: object) -> object:
        if isinstance(value, dict) and "option_strings" in value:
            lines[key := f"@option{len(lines)}@"] = json.dumps(value)
            return key
        if isinstance(value, dict):
            return {k: mark(v) for k, v in value.items()}
        if isinstance(value, list):
            return [mark(v) for v in value]
        return value

    text = json.dumps(mark(record), indent=1)
    for key, line in lines.items():
        text = text.replace(json.dumps(key), line)
    return text + "\n"


def test_the_snapshot_is_of_both_clis_with_their_known_commands() -> None:
    """A guard on the fixture itself: it holds the commands and flags this test is meant to keep."""
    held = json.loads(SNAPSHOT.read_text("utf-8"))
    assert set(held) == set(CLIS)
    assert {"make-shards", "pretrain", "import-weights", "embed"} <= set(
        held["ssl-benthic"]["commands"]
    )
    assert {"hmc", "train", "evaluate", "predict", "compare"} <= set(
        held["hml-finetune"]["commands"]
    )
    workers = {o["dest"]: o for o in held["ssl-benthic"]["commands"]["make-shards"]["options"]}[
        "workers"
    ]
    assert workers["default"] == 1 and workers["type"]["parses"]["0"] == "error"


@pytest.mark.parametrize("prog", sorted(CLIS))
def test_every_command_and_flag_is_as_the_snapshot_holds(prog: str) -> None:
    held = json.loads(SNAPSHOT.read_text("utf-8"))[prog]
    now = snapshot()[prog]
    assert list(now["commands"]) == list(held["commands"])  # same commands, same --help order
    assert now["top"] == held["top"]
    for name, command in held["commands"].items():
        assert now["commands"][name] == command, f"{prog} {name} differs from {SNAPSHOT.name}"
    assert now == held


def test_the_record_sees_a_changed_default() -> None:
    """The comparison can fail: one default changed on a copy of a parser changes its record."""
    from ssl_benthic.cli import build_parser

    parser = build_parser()
    before = cli_record(parser)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub.choices["make-shards"].set_defaults(seed=1)
    assert cli_record(parser) != before


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_cli_flags.py --write   (rewrites the snapshot)")
    # run as a script, tests/ is first on the path and its ssl_benthic/ test folder would shadow
    # the package: put the repository root first
    sys.path[0] = str(Path(__file__).resolve().parents[1])
    SNAPSHOT.write_text(dump(snapshot()), "utf-8")
    print(f"wrote {SNAPSHOT}")
