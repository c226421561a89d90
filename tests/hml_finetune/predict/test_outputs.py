"""The prediction writers' registry: every writer file is a `--format`, and a new one is one file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import hml_finetune.predict.outputs as outputs
from hml_finetune.cli import build_parser
from hml_finetune.predict.inputs import Item
from hml_finetune.predict.writers import WriteContext

DUMMY = """
from hml_finetune.predict.writers import Writer


class KeysWriter(Writer):
    name = "keys"
    help = "one key per line"

    def write(self, item, heads, top):
        self.fh.write(item.key + "\\n")


WRITER = KeysWriter
"""


def _format_choices() -> list[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["predict"]
    return list(sub._option_string_actions["--format"].choices)


def test_the_format_choices_are_the_registered_writers() -> None:
    assert sorted(outputs.writers()) == ["coralnet", "csv", "jsonl"]
    assert _format_choices() == sorted(outputs.writers())


def test_one_file_adds_a_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer file beside the others is a `--format` and writes atomically like them."""
    (tmp_path / "keys.py").write_text(DUMMY, encoding="utf-8")
    monkeypatch.setattr(outputs, "__path__", [*outputs.__path__, str(tmp_path)])
    outputs.writers.cache_clear()
    try:
        assert "keys" in _format_choices()
        out = tmp_path / "out" / "keys.txt"
        writer = outputs.open_writer("keys", WriteContext(out, points=False))
        for key in ("a.jpg", "b.jpg"):
            writer.write(Item(key, key), {}, {})
        assert not out.exists()  # written beside it until closed
        writer.close()
        assert out.read_text() == "a.jpg\nb.jpg\n"
    finally:
        outputs.writers.cache_clear()


def test_jsonl_writer_writes_an_error_record(tmp_path: Path) -> None:
    out = tmp_path / "p.jsonl"
    writer = outputs.open_writer("jsonl", WriteContext(out, points=True))
    writer.write(Item("x@1,2", "x.png", 1, 2, "cannot read image"), {}, {})
    writer.close()
    assert json.loads(out.read_text()) == {
        "key": "x@1,2",
        "image": "x.png",
        "row": 1,
        "column": 2,
        "heads": {},
        "error": "cannot read image",
    }
