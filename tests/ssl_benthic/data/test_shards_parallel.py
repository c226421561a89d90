"""make-shards --workers (byte-identical to one worker, skips reported the same, bounded in-flight
work) and --resume (an interrupted run's finished shards reused, the result byte-identical to an
uninterrupted run). Every image is drawn here, small."""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssl_benthic.cli import main
from ssl_benthic.core.errors import UserError
from ssl_benthic.data.shards import parallel
from ssl_benthic.data.shards.build import LOCK, PROGRESS
from ssl_benthic.data.shards.reader import load_manifest
from ssl_benthic.data.shards.verify import verify_shards
from ssl_benthic.data.sources import point_shards as point_sources
from ssl_benthic.data.sources import tables as sources

N_IMAGES = 40


def _image(i: int, fmt: str = "PNG", size: tuple[int, int] = (24, 16)) -> bytes:
    pixels = np.random.default_rng(i).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt)
    return buf.getvalue()


def _csv_case(tmp_path: Path, n: int = N_IMAGES) -> Path:
    """n images listed in a CSV (site s0..s4, one label each), with a broken JPEG at row 8 (i=6),
    a missing file at row 14 (i=12) and an empty image cell at row 20 (i=18)."""
    root = tmp_path / "images"
    root.mkdir()
    lines = ["image,catami_biota,site"]
    for i in range(n):
        name = f"im{i:03d}.{'jpg' if i % 3 else 'png'}"
        fmt = "JPEG" if i % 3 else "PNG"
        if i == 6:
            (root / name).write_bytes(_image(i, fmt)[:150])  # truncated: does not decode
        elif i != 12:
            (root / name).write_bytes(_image(i, fmt))
        lines.append(f"{'' if i == 18 else name},[BIOTA] > Biota > C{i % 4},s{i % 5}")
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path / "list.csv"


def _csv_argv(csv_path: Path, out: Path, *extra: str) -> list[str]:
    return [
        "make-shards",
        "--csv",
        str(csv_path),
        "--images-root",
        str(csv_path.parent / "images"),
        "--out",
        str(out),
        "--resize",
        "8",
        "--max-per-shard",
        "5",
        "--seed",
        "9",  # the broken image is the 8th in the shuffled order: in shard 1
        "--label-columns",
        "catami_biota=biota",
        *extra,
    ]


def _digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path (hidden files included)."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _partials(tmp_path: Path, name: str) -> list[Path]:
    return sorted(tmp_path.glob(f".{name}.partial-*"))


SKIPPED = [
    {
        "row": 8,
        "file": "im006.png",
        "reason": "cannot read image: OSError: image file is truncated",
    },
    {"row": 14, "file": "im012.png", "reason": "missing file"},
    {"row": 20, "file": "", "reason": "empty image cell"},
]


# --- --workers ----------------------------------------------------------------------------------


def test_two_workers_write_the_same_bytes_and_skips_as_one(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    csv_path = _csv_case(tmp_path)
    assert main(_csv_argv(csv_path, tmp_path / "one")) == 0
    out_one = capsys.readouterr().out
    assert main(_csv_argv(csv_path, tmp_path / "two", "--workers", "2")) == 0
    out_two = capsys.readouterr().out
    one, two = _digests(tmp_path / "one"), _digests(tmp_path / "two")
    assert len(one) == 9 and one == two  # 37 samples: 8 shards and the manifest
    manifest = load_manifest(tmp_path / "two")
    assert manifest["num_samples"] == 37 and manifest["source"]["skipped"] == SKIPPED
    assert out_one.replace("one", "two") == out_two  # the same lines: written, skipped, verified
    assert "row 8: im006.png: cannot read image: OSError: image file is truncated" in out_two
    assert not _partials(tmp_path, "one") and not _partials(tmp_path, "two")


def test_workers_below_one_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    csv_path = _csv_case(tmp_path, n=2)
    with pytest.raises(SystemExit) as exc:
        main(_csv_argv(csv_path, tmp_path / "out", "--workers", "0"))
    assert exc.value.code == 2
    assert "argument --workers: must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(UserError, match="workers must be >= 1, got 0"):
        sources.make_shards_from_csv(csv_path, tmp_path / "images", tmp_path / "out", workers=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "list.csv"]


CORALNET_MAP = "code,path\nPOR,[BIOTA] > Biota > Cnidaria > Corals\nALG,[BIOTA] > Biota > Algae\n"


def _coralnet_case(tmp_path: Path) -> Path:
    """40 images (two blocks of 32) with 2-3 points each; image 5's header reads, its pixels do not."""
    lines = ["Name,Row,Column,Label"]
    for i in range(40):
        name = f"p{i:02d}.{'jpg' if i == 5 else 'png'}"
        data = _image(100 + i, "JPEG", (64, 64)) if i == 5 else _image(100 + i, "PNG", (20, 18))
        (tmp_path / name).write_bytes(data[: len(data) // 2] if i == 5 else data)  # header only
        for j in range(2 + i % 2):
            lines.append(f"{name},{3 + 5 * j},{2 + 7 * j},{'POR' if (i + j) % 2 else 'ALG'}")
    (tmp_path / "map.csv").write_text(CORALNET_MAP, encoding="utf-8")
    (tmp_path / "points.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path / "points.csv"


def test_two_workers_cut_the_same_patches_as_one(tmp_path: Path) -> None:
    csv_path = _coralnet_case(tmp_path)
    base = ["make-shards", "--coralnet", str(csv_path), "--label-map", str(tmp_path / "map.csv")]
    base += ["--patch", "6", "--max-per-shard", "16", "--seed", "1"]
    assert main([*base, "--out", str(tmp_path / "one")]) == 0
    assert main([*base, "--out", str(tmp_path / "two"), "--workers", "2"]) == 0
    one = _digests(tmp_path / "one")
    assert one == _digests(tmp_path / "two") and len(one) == 8  # 97 patches: 7 shards
    skipped = load_manifest(tmp_path / "one")["source"]["skipped"]
    assert [(s["row"], s["file"]) for s in skipped] == [(r, "p05.jpg") for r in (14, 15, 16)]


def test_verify_with_two_workers_reports_the_same(tmp_path: Path) -> None:
    csv_path = _csv_case(tmp_path)
    split = ["--split", "train=0.6,val=0.4", "--group-by", "site"]
    assert main([*_csv_argv(csv_path, tmp_path / "out"), *split, "--workers", "2"]) == 0
    val = tmp_path / "out/val"
    shutil.copy(tmp_path / "out/train/shard-000001.tar", val / "shard-000001.tar")  # a leak
    shutil.copy(val / "shard-000002.tar", val / "shard-000009.tar")  # not listed
    one, two = verify_shards(tmp_path / "out"), verify_shards(tmp_path / "out", workers=2)
    assert (two.num_shards, two.num_samples) == (one.num_shards, one.num_samples) == (8, 37)
    assert two.faults == one.faults and len(one.faults) == 2  # sha256 differs, not listed
    assert two.warnings == one.warnings and len(one.warnings) == 5  # 5 images in both splits


def test_ordered_map_keeps_order_and_bounds_work_in_flight() -> None:
    pulled = []

    def items():
        for i in range(100):
            pulled.append(i)
            yield i

    results = parallel.ordered_map(abs, items(), workers=2, chunksize=3)
    assert next(results) == 0
    assert len(pulled) <= (2 * parallel.AHEAD + 1) * 3  # chunks in flight, not the input
    assert [0, *results] == list(range(100))
    assert list(parallel.ordered_map(abs, [-2, -1], workers=1)) == [2, 1]


# --- --resume -----------------------------------------------------------------------------------


def _failing_after(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Make `sources._encode_file` raise KeyboardInterrupt at its call n + 1 (one worker)."""
    encode, calls = sources._encode_file, [0]

    def failing(resize: int, path: Path):
        calls[0] += 1
        if calls[0] > n:
            raise KeyboardInterrupt
        return encode(resize, path)

    monkeypatch.setattr(sources, "_encode_file", failing)


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    encode, calls = sources._encode_file, [0]

    def counting(resize: int, path: Path):
        calls[0] += 1
        return encode(resize, path)

    monkeypatch.setattr(sources, "_encode_file", counting)
    return calls


def test_resume_after_an_interrupt_reuses_finished_shards_byte_identically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    csv_path = _csv_case(tmp_path)
    assert main(_csv_argv(csv_path, tmp_path / "clean")) == 0
    out = tmp_path / "out"
    _failing_after(monkeypatch, 23)  # 23 images read (one broken): shards 0-3 finished
    with pytest.warns(UserWarning, match=r"kept the 4 finished shards .* --resume reuses them"):
        assert main(_csv_argv(csv_path, out)) == 130  # Ctrl-C
    assert not out.exists()
    (partial,) = _partials(tmp_path, "out")
    assert sorted(p.name for p in partial.iterdir()) == [
        LOCK,
        PROGRESS,
        *(f"shard-00000{i}.tar" for i in range(5)),  # shard 4 half-written
    ]
    records = [json.loads(line) for line in (partial / PROGRESS).read_text().splitlines()[1:]]
    clean = load_manifest(tmp_path / "clean")["shards"]
    assert [{k: r[k] for k in clean[0]} for r in records] == clean[:4]
    assert [(r["start"], r["end"]) for r in records] == [(0, 5), (5, 11), (11, 16), (16, 21)]
    assert [r["skipped"] for r in records] == [
        [],
        [{"key": "00000006_im006", **SKIPPED[0]}],
        [],
        [],
    ]
    capsys.readouterr()
    monkeypatch.undo()
    calls = _counting(monkeypatch)
    assert main([*_csv_argv(csv_path, out), "--resume"]) == 0
    assert "--resume: reusing 4 finished shards (20 samples)" in capsys.readouterr().out
    assert calls[0] == 38 - 21  # only the images after the reused shards' places are encoded
    assert _digests(out) == _digests(tmp_path / "clean")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean", "images", "list.csv", "out"]


def test_resume_rewrites_from_a_changed_image_or_a_damaged_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    csv_path = _csv_case(tmp_path)
    out, clean = tmp_path / "out", tmp_path / "clean"
    assert main(_csv_argv(csv_path, clean)) == 0
    _failing_after(monkeypatch, 23)
    with pytest.warns(UserWarning, match="kept the 4 finished shards"):
        main(_csv_argv(csv_path, out))
    monkeypatch.undo()
    (partial,) = _partials(tmp_path, "out")
    shutil.copytree(partial, tmp_path / "backup")
    # a shard whose file changed on disk, and a torn last progress line (a kill mid-write)
    data = bytearray((partial / "shard-000002.tar").read_bytes())
    data[700] ^= 1
    (partial / "shard-000002.tar").write_bytes(bytes(data))
    with open(partial / PROGRESS, "a") as f:
        f.write('{"file": "shard-0000')
    capsys.readouterr()
    assert main([*_csv_argv(csv_path, out), "--resume"]) == 0
    assert "--resume: reusing 2 finished shards (10 samples)" in capsys.readouterr().out
    assert _digests(out) == _digests(clean)
    # an image of shard 1 changed (bytes and mtime): shards 1.. are written again from it
    shutil.copytree(tmp_path / "backup", partial)
    (image,) = (tmp_path / "images").glob(f"im{_shard_rows(partial, 1)[0]:03d}.*")
    image.write_bytes(_image(999, "JPEG" if image.suffix == ".jpg" else "PNG"))
    assert main([*_csv_argv(csv_path, out), "--resume", "--overwrite"]) == 0
    assert "--resume: reusing 1 finished shards (5 samples)" in capsys.readouterr().out
    assert main(_csv_argv(csv_path, clean, "--overwrite")) == 0  # of the changed input
    assert _digests(out) == _digests(clean)


def test_resume_of_point_patches_inside_a_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    csv_path = _coralnet_case(tmp_path)
    base = ["make-shards", "--coralnet", str(csv_path), "--label-map", str(tmp_path / "map.csv")]
    base += ["--patch", "6", "--max-per-shard", "16", "--seed", "1"]
    assert main([*base, "--out", str(tmp_path / "clean")]) == 0
    cut, calls = point_sources._image_results, [0]

    def failing(spec, unit):
        calls[0] += 1
        if calls[0] > 34:  # the first block (32 images) is written, the second fails
            raise RuntimeError("disk on fire")
        return cut(spec, unit)

    monkeypatch.setattr(point_sources, "_image_results", failing)
    with pytest.warns(UserWarning, match="kept the 4 finished shards"):
        assert main([*base, "--out", str(tmp_path / "out")]) == 1
    (partial,) = _partials(tmp_path, "out")
    records = [json.loads(line) for line in (partial / PROGRESS).read_text().splitlines()[1:]]
    assert records[-1]["end"] == 67  # inside the first block of 82 points (p05: 3 skipped)
    monkeypatch.undo()
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "out"), "--resume", "--workers", "2"]) == 0
    assert "--resume: reusing 4 finished shards (64 samples)" in capsys.readouterr().out
    assert _digests(tmp_path / "out") == _digests(tmp_path / "clean")


def _shard_rows(folder: Path, index: int) -> list[int]:
    """The row indices (key prefixes) of the samples in shard `index` of `folder`."""
    with tarfile.open(folder / f"shard-{index:06d}.tar") as tar:
        return sorted({int(m.name[:8]) for m in tar})


KILLER = """
import os, signal, sys
from ssl_benthic.cli import main
from ssl_benthic.data.sources import tables as sources
encode, calls = sources._encode_file, [0]
def killing(resize, path):
    calls[0] += 1
    if calls[0] > int(os.environ["KILL_AFTER"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return encode(resize, path)
sources._encode_file = killing
sys.exit(main(sys.argv[1:]))
"""


def test_resume_after_sigkill_with_splits_and_two_workers(tmp_path: Path) -> None:
    csv_path = _csv_case(tmp_path)
    split = ["--split", "train=0.6,val=0.4", "--group-by", "site"]  # train 23 images, val 15
    assert main([*_csv_argv(csv_path, tmp_path / "clean"), *split]) == 0
    (tmp_path / "killer.py").write_text(KILLER, encoding="utf-8")
    killer = [sys.executable, str(tmp_path / "killer.py")]
    env = {**os.environ, "KILL_AFTER": "35"}  # 12 images into val: 2 of its shards finished
    done = subprocess.run([*killer, *_csv_argv(csv_path, tmp_path / "out"), *split], env=env)
    assert done.returncode == -9 and not (tmp_path / "out").exists()
    (partial,) = _partials(tmp_path, "out")
    assert (partial / "train" / PROGRESS).is_file()  # the first split, finished, kept whole
    assert len(list(partial.glob(".val.partial-*/shard-*.tar"))) == 3  # the third half-written
    argv = [*_csv_argv(csv_path, tmp_path / "out"), *split, "--resume", "--workers", "2"]
    assert main(argv) == 0
    assert _digests(tmp_path / "out") == _digests(tmp_path / "clean")
    assert not _partials(tmp_path, "out")


def test_resume_leaves_a_running_build_alone_and_keeps_the_out_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    csv_path = _csv_case(tmp_path, n=12)
    out = tmp_path / "out"
    _failing_after(monkeypatch, 8)
    with pytest.warns(UserWarning, match="kept the 1 finished shards"):
        main(_csv_argv(csv_path, out))
    monkeypatch.undo()
    (partial,) = _partials(tmp_path, "out")
    fd = os.open(partial / LOCK, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as if its run were still going
    try:
        with pytest.warns(UserWarning, match=f"{partial.name}: left by an interrupted run"):
            assert main([*_csv_argv(csv_path, out), "--resume"]) == 0
    finally:
        os.close(fd)
    assert "--resume" not in capsys.readouterr().out  # nothing reused
    assert partial.is_dir()
    assert main([*_csv_argv(csv_path, out), "--resume"]) == 2  # a non-empty --out is refused
    assert "folder is not empty; pass --overwrite" in capsys.readouterr().err
    assert partial.is_dir()
    before = _digests(out)
    assert main([*_csv_argv(csv_path, out), "--resume", "--overwrite"]) == 0
    assert "--resume: reusing 1 finished shards" in capsys.readouterr().out
    assert _digests(out) == before and not _partials(tmp_path, "out")


TERMINATOR = """
import glob, os, signal, sys, time
from pathlib import Path
from ssl_benthic.cli import main
from ssl_benthic.data.sources import tables as sources
encode, flag, calls = sources._encode_file, Path(os.environ["TERM_FLAG"]), [0]
def finished():  # shards recorded in the build's progress file (after its header line)
    files = glob.glob(os.environ["TERM_PROGRESS"])
    return len(Path(files[0]).read_text().splitlines()) - 1 if files else 0
def terminating(resize, path):
    calls[0] += 1  # per worker: the 11th is in the worker's second chunk of 8
    if calls[0] > 10 and not flag.exists():
        flag.touch()  # one SIGTERM, from a worker, to the make-shards process
        start = time.monotonic()
        while finished() < 2 and time.monotonic() - start < 60:
            time.sleep(0.05)
        os.kill(os.getppid(), signal.SIGTERM)
        time.sleep(5)  # still busy when the pool is terminated
    return encode(resize, path)
sources._encode_file = terminating
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_with_two_workers_prints_one_line_and_exits_143(tmp_path: Path) -> None:
    """#22.12: a SIGTERM used to kill make-shards unseen while its workers printed tracebacks."""
    csv_path = _csv_case(tmp_path)
    assert main(_csv_argv(csv_path, tmp_path / "clean")) == 0
    (tmp_path / "terminator.py").write_text(TERMINATOR, encoding="utf-8")
    progress = str(tmp_path / ".out.partial-*" / PROGRESS)
    env = {**os.environ, "TERM_FLAG": str(tmp_path / "sent"), "TERM_PROGRESS": progress}
    argv = [*_csv_argv(csv_path, tmp_path / "out"), "--workers", "2"]
    done = subprocess.run(
        [sys.executable, str(tmp_path / "terminator.py"), *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 143
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("interrupted by SIGTERM: ") and "finished shards" in lines[0]
    assert "--resume reuses them" in lines[0] and "Traceback" not in done.stdout
    assert not (tmp_path / "out").exists() and _partials(tmp_path, "out")
    assert main([*argv, "--resume"]) == 0
    assert _digests(tmp_path / "out") == _digests(tmp_path / "clean")
