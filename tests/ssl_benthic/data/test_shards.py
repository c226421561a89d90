"""Shards: writing, determinism, verification, the reader's rank/worker split and decode errors."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_benthic.cli import main
from ssl_benthic.core.errors import DataError
from ssl_benthic.data.shards.format import ShardSample
from ssl_benthic.data.shards.reader import (
    DECODE_ERRORS,
    iter_samples,
    load_manifest,
    make_loader,
    shard_urls,
)
from ssl_benthic.data.shards.verify import verify_shards
from ssl_benthic.data.shards.writer import write_shards


def _encode(i: int, fmt: str = "PNG", size: tuple[int, int] = (8, 8)) -> bytes:
    rng = np.random.default_rng(i)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt)
    return buf.getvalue()


def _samples(n: int) -> list[ShardSample]:
    out = []
    for i in range(n):
        fmt, ext = ("PNG", "png") if i % 2 == 0 else ("JPEG", "jpg")
        labels = {"biota": [f"[BIOTA] > Biota > C{i % 3}"]} if i % 4 else {}
        out.append(
            ShardSample(f"s{i:03d}", _encode(i, fmt), ext, {"site": f"x{i}", "labels": labels})
        )
    return out


def _first_pixel(image: Image.Image) -> torch.Tensor:
    return torch.tensor(image.getpixel((0, 0)))


def test_round_trip_bytes_labels_and_manifest(tmp_path: Path) -> None:
    samples = _samples(10)
    manifest = write_shards(samples, tmp_path, max_per_shard=4, label_schema={"heads": ["biota"]})
    assert [s["num_samples"] for s in manifest["shards"]] == [4, 4, 2]
    assert manifest == json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["num_samples"] == 10 and manifest["label_schema"] == {"heads": ["biota"]}
    raw = {}
    for entry in manifest["shards"]:
        path = tmp_path / entry["file"]
        data = path.read_bytes()
        assert entry["bytes"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        with tarfile.open(path) as tar:
            raw.update({m.name: tar.extractfile(m).read() for m in tar})
    for s in samples:
        assert raw[f"{s.key}.{s.ext}"] == s.image
        assert json.loads(raw[f"{s.key}.json"]) == s.meta
    read = {key: (image, meta) for key, image, meta in iter_samples(tmp_path)}
    assert sorted(read) == [s.key for s in samples]
    for s in samples:
        image, meta = read[s.key]
        assert meta["labels"] == s.meta["labels"] and meta["site"] == s.meta["site"]
        expected = np.asarray(Image.open(io.BytesIO(s.image)).convert("RGB"))
        assert np.array_equal(np.asarray(image), expected)


def test_same_input_gives_identical_files_and_seed_changes_order(tmp_path: Path) -> None:
    a = write_shards(_samples(12), tmp_path / "a", max_per_shard=5, seed=3)
    b = write_shards(_samples(12), tmp_path / "b", max_per_shard=5, seed=3)
    c = write_shards(_samples(12), tmp_path / "c", max_per_shard=5, seed=4)
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    assert (tmp_path / "a/manifest.json").read_bytes() == (
        tmp_path / "b/manifest.json"
    ).read_bytes()
    assert [s["sha256"] for s in a["shards"]] != [s["sha256"] for s in c["shards"]]


def test_shard_byte_bound(tmp_path: Path) -> None:
    manifest = write_shards(_samples(12), tmp_path, max_shard_bytes=2 * 10240)
    assert len(manifest["shards"]) > 1
    assert all(s["bytes"] <= 2 * 10240 for s in manifest["shards"])
    assert sum(s["num_samples"] for s in manifest["shards"]) == 12


@pytest.mark.parametrize("key", ["../evil", "a/b", "a.b", "a\\b", " ", "", "..", "a b"])
def test_unsafe_keys_are_rejected(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="unsafe sample key"):
        write_shards([ShardSample(key, _encode(0), "png", {})], tmp_path / "out")
    assert not list(tmp_path.rglob("*.tar")) and not (tmp_path / "evil").exists()


def test_duplicate_key_and_bad_manifest_entry_are_rejected(tmp_path: Path) -> None:
    twice = [ShardSample("k", _encode(0), "png", {})] * 2
    with pytest.raises(ValueError, match="duplicate sample key 'k'"):
        write_shards(twice, tmp_path / "dup")
    write_shards(_samples(2), tmp_path / "m")
    manifest = json.loads((tmp_path / "m/manifest.json").read_text())
    manifest["shards"][0]["file"] = "../outside.tar"
    (tmp_path / "m/manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="outside.tar"):
        load_manifest(tmp_path / "m")


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _failing_after(samples: list[ShardSample], k: int, exc: BaseException):
    yield from samples[:k]
    raise exc


@pytest.mark.parametrize("exc", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_failed_write_leaves_the_earlier_set_byte_identical(tmp_path: Path, exc) -> None:
    out = tmp_path / "out"
    write_shards(_samples(9), out, max_per_shard=3)
    before = _digests(out)
    assert len(before) == 4  # three shards and the manifest
    with pytest.raises(type(exc)):
        write_shards(_failing_after(_samples(9), 5, exc), out, max_per_shard=2, overwrite=True)
    assert _digests(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the partial folder is gone


def test_non_empty_out_is_refused_and_overwrite_replaces_it_whole(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_shards(_samples(9), out, max_per_shard=3)
    before = _digests(out)
    with pytest.raises(DataError, match=r"out: folder is not empty; pass --overwrite"):
        write_shards(_samples(2), out)
    assert _digests(out) == before
    manifest = write_shards(_samples(2), out, overwrite=True)
    assert sorted(_digests(out)) == ["manifest.json", "shard-000000.tar"]  # old shards 1, 2 gone
    assert load_manifest(out) == manifest and manifest["num_samples"] == 2
    assert verify_shards(out).ok


def test_verify_reports_a_tar_the_manifest_does_not_list(tmp_path: Path) -> None:
    write_shards(_samples(4), tmp_path / "s", max_per_shard=2)
    (tmp_path / "s/shard-000002.tar").write_bytes((tmp_path / "s/shard-000001.tar").read_bytes())
    report = verify_shards(tmp_path / "s")
    assert report.faults == [
        f"{tmp_path / 's/shard-000002.tar'}: not listed in {tmp_path / 's/manifest.json'}"
    ]


def _keys_read(shards: Path, rank: int, epochs: int = 1, **kw) -> list[list[str]]:
    loader = make_loader(
        shards, batch_size=4, transform=_first_pixel, rank=rank, world_size=2, **kw
    )
    out = []
    for _ in range(epochs):
        batches = list(loader)
        assert len(batches) == len(loader)
        assert all(images.shape == (4, 3) for images, _ in batches)
        out.append([m["__key__"] for _, metas in batches for m in metas])
    return out


def test_two_ranks_two_workers_read_every_sample_once_per_epoch(tmp_path: Path) -> None:
    write_shards(_samples(32), tmp_path, max_per_shard=4)  # 8 shards: 2 per rank x worker
    reads = [_keys_read(tmp_path, r, epochs=2, num_workers=2, shuffle_buffer=6) for r in (0, 1)]
    for epoch in (0, 1):
        keys = reads[0][epoch] + reads[1][epoch]
        assert Counter(keys) == Counter(f"s{i:03d}" for i in range(32))
    assert set(reads[0][0]) != set(reads[0][1])  # shards are reassigned between epochs


def test_unequal_ranks_run_equal_steps(tmp_path: Path) -> None:
    write_shards(_samples(36), tmp_path, max_per_shard=4)  # 9 shards: 5 on rank 0, 4 on rank 1
    (keys0,), (keys1,) = (_keys_read(tmp_path, r, epoch_samples=48) for r in (0, 1))
    assert len(keys0) == len(keys1) == 24  # 6 steps each, more than either rank holds
    assert len(set(keys0)) == 20 and len(set(keys1)) == 16  # so each re-reads its own shards
    assert set(keys0).isdisjoint(keys1) and len(set(keys0) | set(keys1)) == 36


def test_corrupt_image_is_skipped_counted_and_warned(tmp_path: Path) -> None:
    good = _samples(6)
    broken = ShardSample("broken", _encode(99, "JPEG", (64, 64))[:200], "jpg", {})
    write_shards(good[:3] + [broken] + good[3:], tmp_path)
    DECODE_ERRORS.reset()
    with pytest.warns(UserWarning, match="'broken'"):
        keys = [key for key, _, _ in iter_samples(tmp_path)]
    assert keys == [s.key for s in good]
    assert DECODE_ERRORS.count == 1
    DECODE_ERRORS.reset()
    loader = make_loader(tmp_path, batch_size=2, transform=_first_pixel, rank=0, world_size=1)
    with pytest.warns(UserWarning, match="'broken'"):
        metas = [m for _, batch in loader for m in batch]
    assert DECODE_ERRORS.count >= 1 and "broken" not in {m["__key__"] for m in metas}
    report = verify_shards(tmp_path)
    assert len(report.faults) == 1 and "'broken'" in report.faults[0]


def test_tampered_shard_fails_verify(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_shards(_samples(8), tmp_path / "split_a", max_per_shard=3)
    write_shards(_samples(4), tmp_path / "split_b")
    (tmp_path / "manifest.json").write_text('{"splits": {"split_a": {}, "split_b": {}}}')
    assert main(["verify-shards", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("checked ") == 2
    shard = tmp_path / "split_a/shard-000001.tar"
    data = bytearray(shard.read_bytes())
    data[512 + 100] ^= 0x01  # inside the first member's image bytes
    shard.write_bytes(bytes(data))
    assert main(["verify-shards", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "shard-000001.tar: sha256 differs" in out and "FAILED" in out
    assert verify_shards(tmp_path / "split_b").ok


def _write_images(root: Path, names: list[str], size: tuple[int, int] = (12, 8)) -> None:
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(_encode(i, "PNG", size))


def test_make_shards_from_csv_with_multi_label_and_empty_cells(tmp_path: Path) -> None:
    images = tmp_path / "images"
    _write_images(images, ["a/one.png", "a/two.png", "b/three four.png"])
    rows = [
        ["image", "catami_biota", "catami_substrate", "dataset", "site"],
        ["a/one.png", "[BIOTA] > Biota > Sponges|[BIOTA] > Biota > Cnidaria", "", "d1", "s1"],
        ["a/two.png", "", "[SUBSTRATE] > Substrate > Rock", "d1", "s2"],
        ["b/three four.png", "[BIOTA] > Biota > Sponges", "", "d2", "s3"],
    ]
    with open(tmp_path / "list.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    out = tmp_path / "shards"
    argv = ["make-shards", "--csv", str(tmp_path / "list.csv"), "--images-root", str(images)]
    assert main([*argv, "--out", str(out), "--resize", "4", "--seed", "1"]) == 0
    read = {meta["site"]: (key, image, meta) for key, image, meta in iter_samples(out)}
    assert read["s1"][2]["labels"] == {
        "biota": ["[BIOTA] > Biota > Sponges", "[BIOTA] > Biota > Cnidaria"]
    }
    assert read["s2"][2]["labels"] == {"substrate": ["[SUBSTRATE] > Substrate > Rock"]}
    assert read["s3"][2]["dataset"] == "d2" and read["s3"][0] == "00000002_three_four"
    assert all(image.size == (6, 4) for _, image, _ in read.values())  # short side 8 -> 4
    schema = load_manifest(out)["label_schema"]["heads"]
    assert schema["substrate"] == ["[SUBSTRATE] > Substrate > Rock"] and len(schema["biota"]) == 2


def test_csv_path_escaping_images_root_is_rejected(tmp_path: Path) -> None:
    _write_images(tmp_path, ["secret.png"])
    (tmp_path / "root").mkdir()
    (tmp_path / "list.csv").write_text("image,catami_biota\n../secret.png,x\n")
    from ssl_benthic.data.sources.tables import make_shards_from_csv

    with pytest.raises(ValueError, match="escapes the images root"):
        make_shards_from_csv(tmp_path / "list.csv", tmp_path / "root", tmp_path / "out")


def test_make_shards_from_folder_tree(tmp_path: Path) -> None:
    _write_images(tmp_path / "tree", ["sand/1.png", "sand/2.png", "rock/3.png"])
    out = tmp_path / "shards"
    argv = ["make-shards", "--folder", str(tmp_path / "tree"), "--out", str(out)]
    assert main([*argv, "--head", "substrate", "--max-per-shard", "2"]) == 0
    labels = sorted((m["path"], m["labels"]["substrate"]) for _, _, m in iter_samples(out))
    assert labels == [("rock/3.png", ["rock"]), ("sand/1.png", ["sand"]), ("sand/2.png", ["sand"])]
    assert len(shard_urls(out)) == 2
