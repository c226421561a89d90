"""The command's exit status: 2 for bad input, and the status file the sbatch scripts read."""

from __future__ import annotations

from ssl_benthic.cli import FAILED_ENV, main


def test_a_bad_key_exits_2_and_the_first_failure_is_kept(tmp_path, monkeypatch, capsys):
    """Two ranks fail in turn: the file keeps the first status (a later one does not overwrite)."""
    status = tmp_path / "failed"
    monkeypatch.setenv(FAILED_ENV, str(status))
    config = tmp_path / "missing.yaml"
    assert main(["pretrain", "--config", str(config)]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    assert status.read_text() == "2\n"
    status.write_text("1\n")
    assert main(["pretrain", "--config", str(config)]) == 2
    assert status.read_text() == "1\n"


def test_no_status_file_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(FAILED_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["pretrain", "--config", "missing.yaml"]) == 2
    assert list(tmp_path.iterdir()) == []
