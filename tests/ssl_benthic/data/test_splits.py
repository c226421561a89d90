"""Grouped train/val/test splits (`make-shards --split --group-by`), the partition column, labels
missing from train, and verify-shards' warning about the same image in two splits."""

from __future__ import annotations

import csv
import io
import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ssl_benthic.cli import main
from ssl_benthic.data.shards.format import ShardSample
from ssl_benthic.data.shards.reader import iter_samples, load_manifest
from ssl_benthic.data.shards.writer import write_shards
from ssl_benthic.data.sources.splits import assign_groups, parse_split

SPONGES = "[BIOTA] > Biota > Sponges"
CORALS = "[BIOTA] > Biota > Cnidaria > Corals"
KELP = "[BIOTA] > Biota > Macroalgae"


def _png(i: int) -> bytes:
    pixels = np.random.default_rng(i).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def _csv(tmp_path: Path, rows: list[dict]) -> Path:
    """Write one image per row and a CSV listing them (columns: image, the rows' keys)."""
    for i in range(len(rows)):
        (tmp_path / f"im{i:02d}.png").write_bytes(_png(i))
    columns = ["image", *rows[0]]
    with open(tmp_path / "list.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([f"im{i:02d}.png", *row.values()] for i, row in enumerate(rows))
    return tmp_path / "list.csv"


def _split_metas(out: Path) -> dict[str, list[dict]]:
    return {
        split: [m for _, _, m in iter_samples(out / split)]
        for split in load_manifest_index(out)["splits"]
    }


def load_manifest_index(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


# --- the assignment ---------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=25),
    weights=st.lists(st.integers(1, 20), min_size=1, max_size=4),
    seed=st.integers(0, 2**16),
    label_of=st.lists(st.integers(0, 5), min_size=25, max_size=25),
)
def test_every_group_in_one_split_within_one_group_of_its_target(
    sizes: list[int], weights: list[int], seed: int, label_of: list[int]
) -> None:
    names = ["train", "val", "test", "extra"][: len(weights)]
    fractions = {n: w / sum(weights) for n, w in zip(names, weights, strict=True)}
    groups = {f"g{i}": n for i, n in enumerate(sizes)}
    labels = {f"g{i}": {f"L{label_of[i]}"} for i in range(len(sizes))}
    assignment = assign_groups(groups, fractions, seed, labels)
    assert sorted(assignment) == sorted(groups) and set(assignment.values()) <= set(names)
    total, largest = sum(sizes), max(sizes)
    for name, fraction in fractions.items():
        count = sum(groups[g] for g, s in assignment.items() if s == name)
        assert abs(count - fraction * total) <= largest, (name, count, fraction * total)
    assert assignment == assign_groups(groups, fractions, seed, labels)  # seeded: reproducible


def test_greedy_assignment_largest_group_first() -> None:
    sizes = {"s1": 4, "s2": 3, "s3": 2, "s4": 1}
    fractions = parse_split("train=0.6,val=0.2,test=0.2")
    # targets 6, 2, 2: s1 -> train (4); s2 -> a three-way tie at 2 below -> train (first listed);
    # s3 -> val (2 below); s4 -> test
    assert assign_groups(sizes, fractions) == {
        "s1": "train",
        "s2": "train",
        "s3": "val",
        "s4": "test",
    }
    assert parse_split("train=7,val=1.5,test=1.5") == {"train": 0.7, "val": 0.15, "test": 0.15}


def test_a_label_is_brought_into_train_when_that_costs_little() -> None:
    sizes = {f"g{i}": 2 for i in range(10)}
    fractions = {"train": 0.6, "val": 0.2, "test": 0.2}
    plain = assign_groups(sizes, fractions, seed=1)
    rare = next(g for g, s in sorted(plain.items()) if s != "train")
    labels = {g: ({"rare"} if g == rare else {"common"}) for g in sizes}
    moved = assign_groups(sizes, fractions, seed=1, labels=labels)
    assert moved[rare] == "train"
    assert {g: s for g, s in moved.items() if g != rare} == {
        g: s for g, s in plain.items() if g != rare
    }


# --- make-shards --split --------------------------------------------------------------------

SITES = ["s1"] * 4 + ["s2"] * 3 + ["s3"] * 2 + ["s4"]


def test_csv_split_by_site_keeps_each_site_in_one_split(tmp_path: Path) -> None:
    labels = [SPONGES] * 9 + [CORALS]
    csv_path = _csv(
        tmp_path, [{"site": s, "catami_biota": b} for s, b in zip(SITES, labels, strict=True)]
    )
    out = tmp_path / "out"
    argv = ["make-shards", "--csv", str(csv_path), "--out", str(out), "--seed", "0"]
    argv += ["--label-columns", "catami_biota=biota"]
    with pytest.warns(UserWarning, match="1 labels occur in other splits but not in train: "):
        assert main([*argv, "--split", "train=0.6,val=0.2,test=0.2", "--group-by", "site"]) == 0
    metas = _split_metas(out)
    sites = {split: sorted({m["site"] for m in ms}) for split, ms in metas.items()}
    assert sites == {"train": ["s1", "s2"], "val": ["s3"], "test": ["s4"]}
    assert {split: len(ms) for split, ms in metas.items()} == {"train": 7, "val": 2, "test": 1}
    assert sorted(m["image"] for m in metas["test"]) == ["im09.png"]  # `image` kept for --csv
    index = load_manifest_index(out)
    assert index["num_samples"] == 10 and index["split"]["groups"] == {
        "train": 2,
        "val": 1,
        "test": 1,
    }
    assert index["split"]["missing_from_train"] == [
        {"head": "biota", "label": CORALS, "splits": {"test": 1}}
    ]  # s4 holds it, but moving s4 to train would leave test empty
    assert load_manifest(out / "train")["source"]["split"] == "train"
    assert main(["verify-shards", str(out)]) == 0


def test_partition_column_wins_and_leaks_and_missing_labels_are_warned(tmp_path: Path) -> None:
    parts = ["train", "train", "val", "TEST", "validation", "train"]
    biota = [SPONGES, SPONGES, SPONGES, KELP, CORALS, SPONGES]
    rows = [
        {"site": s, "partition": p, "catami_biota": b}
        for s, p, b in zip(["a", "a", "b", "a", "c", "d"], parts, biota, strict=True)
    ]
    out = tmp_path / "out"
    argv = ["make-shards", "--csv", str(_csv(tmp_path, rows)), "--out", str(out)]
    argv += ["--label-columns", "catami_biota=biota"]
    with pytest.warns(UserWarning) as caught:
        assert main([*argv, "--split", "train=0.5,val=0.5", "--group-by", "site"]) == 0
    messages = [str(w.message) for w in caught]
    assert any(m.endswith("split by its partition column; --split is ignored") for m in messages)
    assert (
        "the partition column puts 1 site groups in two splits: 'a'; their samples leak "
        "between splits"
    ) in messages
    assert (
        f"2 labels occur in other splits but not in train: biota: {CORALS!r} (val 1); "
        f"biota: {KELP!r} (test 1)"
    ) in messages
    images = {s: sorted(m["image"] for m in ms) for s, ms in _split_metas(out).items()}
    assert images == {
        "train": ["im00.png", "im01.png", "im05.png"],
        "val": ["im02.png", "im04.png"],
        "test": ["im03.png"],
    }


def test_coralnet_points_split_by_image(tmp_path: Path) -> None:
    for i in range(6):
        (tmp_path / f"p{i}.png").write_bytes(_png(i))
    lines = ["Name,Row,Column,Label"]
    lines += [
        f"p{i}.png,{r},{c},{'A' if i % 2 else 'B'}" for i in range(6) for r, c in [(1, 1), (4, 2)]
    ]
    (tmp_path / "pts.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    argv = ["make-shards", "--coralnet", str(tmp_path / "pts.csv"), "--out", str(out)]
    assert main([*argv, "--patch", "3", "--split", "train=0.5,val=0.25,test=0.25"]) == 0
    by_split = {s: [m["image"] for m in ms] for s, ms in _split_metas(out).items()}
    assert {s: len(v) for s, v in by_split.items()} == {"train": 6, "val": 4, "test": 2}
    owners = {image: s for s, images in by_split.items() for image in images}
    assert len(owners) == 6  # every image's two points in one split
    assert all(by_split[s].count(image) == 2 for image, s in owners.items())


# --- verify-shards ------------------------------------------------------------------------------


def test_verify_warns_about_the_same_image_in_two_splits(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_shards(
        [ShardSample("k1", _png(1), "png", {}), ShardSample("k2", _png(2), "png", {})],
        tmp_path / "train",
    )
    write_shards(
        [ShardSample("k9", _png(1), "png", {}), ShardSample("k3", _png(3), "png", {})],
        tmp_path / "test",
    )
    (tmp_path / "manifest.json").write_text('{"splits": {"train": {}, "test": {}}}')
    assert main(["verify-shards", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "WARNING same image bytes in test and train: test/k9, train/k1\n" in out
    assert out.count("WARNING") == 1 and out.rstrip().endswith("OK")
    assert main(["verify-shards", str(tmp_path / "train")]) == 0
    assert "WARNING" not in capsys.readouterr().out


def test_folder_tree_split_records_the_image_of_every_sample(tmp_path: Path) -> None:
    for i, cls in enumerate(["sand", "sand", "rock", "rock"]):
        (tmp_path / "tree" / cls).mkdir(parents=True, exist_ok=True)
        (tmp_path / "tree" / cls / f"{i}.png").write_bytes(_png(i))
    out = tmp_path / "out"
    argv = ["make-shards", "--folder", str(tmp_path / "tree"), "--out", str(out)]
    assert main([*argv, "--split", "train=0.5,val=0.5"]) == 0
    images = {s: sorted(m["image"] for m in ms) for s, ms in _split_metas(out).items()}
    assert sorted(images["train"] + images["val"]) == [
        "rock/2.png",
        "rock/3.png",
        "sand/0.png",
        "sand/1.png",
    ]
    assert len(images["train"]) == len(images["val"]) == 2


# --- fractions that whole groups cannot meet (#22.10) -----------------------------------------


def _metas(groups: list[str]) -> list[dict]:
    return [{"site": g, "labels": {"biota": [SPONGES]}} for g in groups]


def test_a_split_far_off_its_fraction_is_warned():
    """One site of 8 samples and two of 1: train gets 80%, val and test 10% each."""
    from ssl_benthic.data.sources.splits import plan_splits

    metas = _metas(["big"] * 8 + ["a", "b"])
    with pytest.warns(UserWarning) as caught:
        plan = plan_splits(
            metas,
            [None] * 10,
            parse_split("train=0.4,val=0.3,test=0.3"),
            group_by="site",
            where="list.csv",
        )
    messages = [str(w.message) for w in caught]
    assert Counter(plan.splits) == {"train": 8, "val": 1, "test": 1}
    assert any(
        "split 'train' got 8 samples (80%), more than 10% off its fraction 40% (10 samples in 3 "
        "site groups, the largest of 8; groups are never cut)" in m
        for m in messages
    )
    assert sum("off its fraction" in m for m in messages) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # within 10 points: quiet
        plan_splits(metas, [None] * 10, parse_split("train=0.8,val=0.1,test=0.1"), group_by="site")


def test_an_empty_split_is_refused_and_nothing_written(tmp_path: Path, capsys) -> None:
    csv_path = _csv(tmp_path, [{"site": s} for s in ["s1"] * 3 + ["s2"] * 3])
    out = tmp_path / "out"
    argv = ["make-shards", "--csv", str(csv_path), "--out", str(out), "--group-by", "site"]
    assert main([*argv, "--split", "train=0.6,val=0.2,test=0.2"]) == 2
    err = capsys.readouterr().err
    assert "--split puts no sample in 'test' (6 samples in 2 site groups, the largest of 3)" in err
    assert not out.exists()
