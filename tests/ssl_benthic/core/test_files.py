"""Files written whole or not at all: a failed write leaves the old file and no temporary one, and
a run's metrics.json (what says it finished) never exists without its metrics.md."""

from __future__ import annotations

import os

import pytest

import hml_finetune.finetune.results as results
from ssl_benthic.core.files import write_atomic


def test_writes_text_and_bytes_over_the_old_file(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")
    assert write_atomic(path, "névé\n") == path
    assert path.read_bytes() == "névé\n".encode()
    write_atomic(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    path.write_text("old")

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space"):
        write_atomic(path, "new")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_no_metrics_json_when_the_report_cannot_be_written(tmp_path, monkeypatch):
    def broken(result):
        raise RuntimeError("a bug in the markdown")

    monkeypatch.setattr(results, "metrics_markdown", broken)
    with pytest.raises(RuntimeError):
        results.write_metrics({"heads": {}}, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.json").exists()
    monkeypatch.undo()
    js, md = results.write_metrics({"heads": {}}, tmp_path / "run")
    assert js.is_file() and md.is_file()
