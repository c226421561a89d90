"""The synthetic sample: reproducible shards, valid CATAMI labels, long tail, mixed depth, learnable pixels."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssl_benthic.core.catami import SEP, depth_of, head_of, is_valid_path
from ssl_benthic.core.errors import DataError
from ssl_benthic.data.sample.labels import BIOTA_CLASSES, RARE_PATHS
from ssl_benthic.data.sample.make_sample import draw_labels, draw_sample, make_sample
from ssl_benthic.data.shards.manifest import split_folders
from ssl_benthic.data.shards.summary import iter_metas, summarize

TINY = {"n_unlabelled": 16, "n_labelled": 30, "size": 32}


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "a"
    make_sample(out, seed=5, **TINY)
    return out


def test_same_seed_gives_identical_files_and_other_seed_differs(tiny, tmp_path):
    make_sample(tmp_path / "b", seed=5, **TINY)
    make_sample(tmp_path / "c", seed=6, **TINY)
    a, b, c = _digests(tiny), _digests(tmp_path / "b"), _digests(tmp_path / "c")
    assert a == b
    shards = Counter(f.split("/")[0] for f in a if f.endswith(".tar"))
    assert shards == {"unlabelled": 8, "train": 5, "val": 6, "test": 6}  # n // (8 or 4) per shard
    assert a["unlabelled/unlabelled-000000.tar"] != c["unlabelled/unlabelled-000000.tar"]


def test_split_counts_and_top_manifest(tiny):
    top = json.loads((tiny / "manifest.json").read_text())
    counts = {k: v["num_samples"] for k, v in top["splits"].items()}
    assert counts == {"unlabelled": 16, "train": 18, "val": 6, "test": 6}
    assert top["seed"] == 5 and top["size"] == 32
    assert list(split_folders(tiny)) == ["unlabelled", "train", "val", "test"]


def test_labels_are_valid_catami_paths_and_prefixes_of_the_truth(tiny):
    folders = split_folders(tiny)
    for split, folder in folders.items():
        for key, meta in iter_metas(folder):
            assert meta["partition"] == split and meta["dataset"] == "synthetic"
            if split == "unlabelled":
                assert "labels" not in meta and "true_labels" not in meta, key
                continue
            assert sorted(meta["true_labels"]) == ["bedforms", "biota", "relief", "substrate"]
            for head, paths in meta["true_labels"].items():
                assert all(is_valid_path(p) and head_of(p) == head for p in paths), (key, paths)
            for head, paths in meta["labels"].items():
                assert paths, f"{key}: empty list for {head} (omit the head instead)"
                for p in paths:
                    assert is_valid_path(p) and head_of(p) == head, (key, p)
                    assert any(t == p or t.startswith(p + SEP) for t in meta["true_labels"][head])


def test_images_decode_at_the_requested_size(tiny):
    _, meta = next(iter_metas(split_folders(tiny)["train"]))
    sample = draw_sample(5, "train", 0, size=32)
    assert sample.meta == meta  # the shard holds what draw_sample draws
    with Image.open(io.BytesIO(sample.image)) as im:
        assert im.format == "JPEG" and im.size == (32, 32) and im.mode == "RGB"
        assert not im.info.get("exif")


def test_rare_deep_nodes_are_rare_but_present():
    n = 1500
    true = [draw_labels(0, "train", i).true_labels for i in range(n)]
    count = Counter(p for t in true for paths in t.values() for p in paths)
    for path in RARE_PATHS:
        assert 0 < count[path] / n < 0.05, (path, count[path])
    assert depth_of(RARE_PATHS[0]) == 7
    assert count[BIOTA_CLASSES["none"][0]] / n > 0.15
    biota = {p for t in true for p in t["biota"]}
    assert len(biota) >= 10 and len({depth_of(p) for p in biota}) >= 4


@pytest.mark.parametrize(("shallow", "unannotated"), [(0.3, 0.15), (0.0, 0.0)])
def test_mixed_depth_and_unannotated_shares(shallow, unannotated):
    n, cut, missing = 1000, 0, 0
    for i in range(n):
        d = draw_labels(1, "val", i, shallow, unannotated)
        missing += len(d.labels) < 4
        for head, paths in d.labels.items():
            for p, t in zip(paths, d.true_labels[head], strict=True):
                if p != t:
                    cut += 1
                    assert t.startswith(p + SEP)
                    assert depth_of(p) >= (2 if head in ("biota", "substrate") else 1), p
    assert abs(cut / n - shallow) < 0.05  # binomial sd ~0.015 at n=1000
    assert abs(missing / n - unannotated) < 0.04


def test_summary_counts_match_the_metadata(tiny):
    s = summarize(tiny)["splits"]
    assert s["unlabelled"] == {"samples": 16, "labelled": 0, "heads": {}}
    metas = [m for _, m in iter_metas(split_folders(tiny)["train"])]
    for head, row in s["train"]["heads"].items():
        labels = [p for m in metas for p in m["labels"].get(head, [])]
        assert row["annotated"] + row["unannotated"] == 18
        assert row["unannotated"] == sum(head not in m["labels"] for m in metas)
        assert row["depth"] == dict(sorted(Counter(p.count(SEP) for p in labels).items()))
        early = sum(
            p not in m["true_labels"][head] for m in metas for p in m["labels"].get(head, [])
        )
        assert row["stop_early"] == early and row["invalid"] == 0


def _features(jpeg: bytes) -> np.ndarray:
    """Colour histogram (4x4x4 bins) plus mean absolute gradients at 3 scales: no learned features."""
    x = np.asarray(Image.open(io.BytesIO(jpeg)), np.float32) / 255
    q = np.minimum((x * 4).astype(int), 3)
    hist = (
        np.bincount((q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]).ravel(), minlength=64)
        / q[..., 0].size
    )
    g, tex = x.mean(-1), []
    for k in (1, 2, 4):
        gk = g.reshape(g.shape[0] // k, k, -1, k).mean((1, 3))
        tex += [np.abs(np.diff(gk, axis=0)).mean(), np.abs(np.diff(gk, axis=1)).mean()]
    return np.concatenate([np.sqrt(hist), 10 * np.array(tex), x.mean((0, 1)), x.std((0, 1))])


def test_a_linear_classifier_learns_substrate_and_biota_from_pixels():
    from sklearn.linear_model import LogisticRegression

    n, n_train = 600, 450
    X = np.stack([_features(draw_sample(3, "train", i, size=64).image) for i in range(n)])
    scenes = [draw_labels(3, "train", i).scene for i in range(n)]
    for y in (np.array([s.substrate for s in scenes]), np.array([s.biota[0] for s in scenes])):
        clf = LogisticRegression(max_iter=2000, C=10).fit(X[:n_train], y[:n_train])
        accuracy = (clf.predict(X[n_train:]) == y[n_train:]).mean()
        majority = Counter(y[n_train:]).most_common(1)[0][1] / (n - n_train)
        assert accuracy > 2 * majority, (accuracy, majority)


def test_failed_make_sample_leaves_the_earlier_sample_and_refuses_without_overwrite(
    tiny, tmp_path, monkeypatch
):
    import ssl_benthic.data.sample.make_sample as sample

    out = tmp_path / "s"
    shutil.copytree(tiny, out)
    before = _digests(out)
    draw = sample._samples

    def failing(seed, split, n, **params):
        if split == "val":
            raise RuntimeError("drawing failed")
        return draw(seed, split, n, **params)

    monkeypatch.setattr(sample, "_samples", failing)
    with pytest.raises(RuntimeError, match="drawing failed"):
        make_sample(out, seed=6, overwrite=True, **TINY)
    assert _digests(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no partial folder left
    monkeypatch.setattr(sample, "_samples", draw)
    with pytest.raises(DataError, match="folder is not empty; pass --overwrite"):
        make_sample(out, seed=6, **TINY)
    assert _digests(out) == before
    make_sample(out, seed=6, overwrite=True, **TINY)
    make_sample(tmp_path / "fresh", seed=6, **TINY)
    assert _digests(out) == _digests(tmp_path / "fresh") != before


def test_make_sample_cli_refuses_a_folder_of_shards(tiny, tmp_path, capsys):
    from ssl_benthic.cli import main

    out = tmp_path / "mine"
    shutil.copytree(tiny / "train", out)  # a user's shard folder
    before = _digests(out)
    assert main(["make-sample", "--out", str(out), "--n-unlabelled", "0", "--n-labelled", "8"]) == 2
    assert f"error: {out}: folder is not empty; pass --overwrite" in capsys.readouterr().err
    assert _digests(out) == before
