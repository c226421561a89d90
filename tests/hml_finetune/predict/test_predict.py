"""`hml-finetune predict`: the same probabilities as the training run's scoring, coherent predicted
sets, the deepest predicted node as the label, every input kind and format read back, error rows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from fixtures.finetune import make_cfg

from hml_finetune.cli import main
from hml_finetune.finetune.features import extract_features
from hml_finetune.finetune.inference import load_finetuned
from hml_finetune.finetune.model import image_transform
from hml_finetune.finetune.train import run_finetune
from hml_finetune.hml.hierarchy import Hierarchy
from hml_finetune.hml.label_rules import expected_hops_labels, min_probability_labels
from hml_finetune.hml.schemes import Scheme, load_scheme
from hml_finetune.predict.labels import head_prediction, top_leaves
from ssl_benthic.data.sample.make_sample import make_sample
from ssl_benthic.data.shards.reader import iter_samples


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sample root, model.ckpt) of a tiny linear probe with per-node thresholds."""
    root = tmp_path_factory.mktemp("predict")
    make_sample(root / "s", seed=0, n_unlabelled=0, n_labelled=60, size=32)
    run_finetune(make_cfg(root / "s", root / "run", "threshold=per-node", "trainer.max_epochs=3"))
    return root / "s", root / "run" / "model.ckpt"


@pytest.fixture(scope="module")
def folder(trained, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The test split's images as loose PNG files (lossless: the decoded pixels) in nested
    sub-folders with mixed-case suffixes; {file key: sample key}."""
    shards, _ = trained
    out = tmp_path_factory.mktemp("images")
    keys = {}
    for i, (key, image, _) in enumerate(iter_samples(shards / "test")):
        rel = Path(f"dive{i % 3}") / ("sub" if i % 2 else "") / f"{key}.{'PNG' if i % 2 else 'png'}"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        image.save(out / rel)
        keys[rel.as_posix()] = key
    (out / ".hidden.png").write_bytes(b"not an image")  # hidden: left out
    (out / "notes.txt").write_text("not an image either")
    return out, keys


def _predict(*args: str) -> int:
    return main(["predict", "--num-workers", "0", *args])


def _predict_jsonl(ckpt: Path, shards: Path, out: Path, *args: str) -> int:
    """`predict --shards SHARDS --format jsonl [args]`; its exit status."""
    return _predict(
        "--checkpoint",
        str(ckpt),
        "--shards",
        str(shards),
        "--out",
        str(out),
        "--format",
        "jsonl",
        *args,
    )


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _reference_probs(shards: Path, ckpt: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The training run's own computation: features of the split, then the heads (no predict code)."""
    model, _, meta = load_finetuned(ckpt)
    transform = image_transform(32, meta["mean"], meta["std"], augment=False)
    feats, keys = extract_features(model.backbone, shards, transform, 8)
    probs = model.predict_features(feats)
    return {k: {h: p[i] for h, p in probs.items()} for i, k in enumerate(keys)}


def test_shards_give_the_probabilities_of_the_training_path(trained, tmp_path):
    shards, ckpt = trained
    out = tmp_path / "p.jsonl"
    assert _predict_jsonl(ckpt, shards / "test", out) == 0
    records = _jsonl(out)
    reference = _reference_probs(shards / "test", ckpt)
    assert [r["key"] for r in records] == list(reference)
    _, hierarchies, _ = load_finetuned(ckpt)
    for r in records:
        for head, h in hierarchies.items():
            got = torch.tensor([r["heads"][head]["probabilities"][n] for n in h.nodes])
            torch.testing.assert_close(got, reference[r["key"]][head], rtol=0, atol=1e-6)


def test_predicted_sets_are_coherent_and_the_label_is_the_deepest(trained, tmp_path):
    """With --label-rule threshold (the default is expected-hops since #20)."""
    shards, ckpt = trained
    out = tmp_path / "p.jsonl"
    _predict_jsonl(ckpt, shards / "test", out, "--label-rule", "threshold")
    _, hierarchies, _ = load_finetuned(ckpt)
    deep_seen = 0
    for r in _jsonl(out):
        for head, h in hierarchies.items():
            pred = r["heads"][head]
            chosen = set(pred["predicted"])
            for node in chosen:  # no node without its parents (roots are never predicted)
                assert {p for p in h.parents[node] if p not in h.roots} <= chosen
            if not chosen:
                assert pred["label"] in h.roots and pred["depth"] == 0
            else:
                deepest = max(h.depth[n] for n in chosen)
                assert (
                    pred["label"] in chosen and pred["depth"] == deepest == h.depth[pred["label"]]
                )
                deep_seen += 1
            assert set(pred["probabilities"]) == set(h.nodes)  # every node, for analysis
            assert pred["label_rule"] == "threshold"
    assert deep_seen > 0


def test_label_rules_on_a_hand_made_hierarchy():
    h = Hierarchy.from_paths(["[B] > a", "[B] > a > x", "[B] > a > y", "[B] > b"])
    index = h.index
    p = torch.zeros(len(h))
    p[index["[B]"]], p[index["[B] > a"]], p[index["[B] > b"]] = 0.9, 0.8, 0.7
    p[index["[B] > a > x"]], p[index["[B] > a > y"]] = 0.6, 0.65
    scheme = Scheme("b", "data")  # labels written with their bracketed root
    pred = head_prediction(p, h, 0.5, scheme)
    assert pred.label == "[B] > a > y" and pred.depth == 2  # deepest, ties by probability
    assert set(pred.predicted) == {"[B] > a", "[B] > a > x", "[B] > a > y", "[B] > b"}
    none = head_prediction(p, h, 0.95, scheme)
    assert (none.label, none.predicted, none.depth) == ("[B]", [], 0)  # not confident below root
    per_node = torch.full((len(h),), 0.95)
    per_node[index["[B] > b"]] = 0.5
    assert head_prediction(p, h, per_node, scheme).label == "[B] > b"
    assert top_leaves(pred, h, scheme, 2) == [
        ("[B] > b", pytest.approx(0.7)),
        ("[B] > a > y", pytest.approx(0.65)),
    ]
    flat = Hierarchy.from_paths(["[COLOUR] > red", "[COLOUR] > blue"])
    q = torch.zeros(len(flat))
    q[flat.index["[COLOUR]"]], q[flat.index["[COLOUR] > red"]] = 0.9, 0.9
    colour = load_scheme("colour", "data", flat=True)
    assert head_prediction(q, flat, 0.5, colour).label == "red"  # a flat head's class name


def test_folder_input_finds_nested_mixed_case_images_and_matches_shards(trained, folder, tmp_path):
    shards, ckpt = trained
    images, keys = folder
    out = tmp_path / "f.jsonl"
    assert (
        _predict(
            "--checkpoint",
            str(ckpt),
            "--images",
            str(images),
            "--out",
            str(out),
            "--format",
            "jsonl",
        )
        == 0
    )
    records = _jsonl(out)
    assert sorted(r["key"] for r in records) == sorted(keys)  # hidden and .txt left out
    assert all(r["image"] == str(images / r["key"]) for r in records)
    reference = _reference_probs(shards / "test", ckpt)
    for r in records:
        for head, probs in r["heads"].items():
            got = torch.tensor(list(probs["probabilities"].values()))
            torch.testing.assert_close(got, reference[keys[r["key"]]][head], rtol=0, atol=1e-6)


def test_glob_input_and_csv_format_read_back(trained, folder, tmp_path):
    _, ckpt = trained
    images, keys = folder
    out = tmp_path / "g.csv"
    pattern = str(images / "dive1" / "**" / "*.[pP][nN][gG]")
    assert (
        _predict("--checkpoint", str(ckpt), "--images", pattern, "--out", str(out), "--top-k", "3")
        == 0
    )
    rows = list(csv.DictReader(out.open()))
    _, hierarchies, _ = load_finetuned(ckpt)
    wanted = sorted(str(images / k) for k in keys if k.startswith("dive1/"))
    assert sorted({r["image"] for r in rows}) == wanted
    assert len(rows) == len(wanted) * len(hierarchies)  # one row per image and head
    for r in rows:
        h = hierarchies[r["head"]]
        assert r["label"] in h.nodes and int(r["depth"]) == h.depth[r["label"]]
        assert r["error"] == "" and len(r["top_k"].split("|")) == 3
        assert set(filter(None, r["predicted"].split("|"))) <= set(h.nodes)


def test_an_unreadable_image_is_an_error_row_and_exit_1(trained, folder, tmp_path):
    _, ckpt = trained
    images, keys = folder
    bad = tmp_path / "imgs"
    bad.mkdir()
    first = next(iter(keys))
    (bad / "good.png").write_bytes((images / first).read_bytes())
    (bad / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = tmp_path / "e.csv"
    assert _predict("--checkpoint", str(ckpt), "--images", str(bad), "--out", str(out)) == 1
    rows = list(csv.DictReader(out.open()))
    broken = [r for r in rows if r["key"] == "broken.jpg"]
    assert len(broken) == 1 and broken[0]["error"] and broken[0]["label"] == ""
    assert {r["key"] for r in rows if not r["error"]} == {"good.png"}
    # nothing is overwritten without being asked
    before = out.read_bytes()
    assert _predict("--checkpoint", str(ckpt), "--images", str(bad), "--out", str(out)) == 2
    assert out.read_bytes() == before
    assert (
        _predict("--checkpoint", str(ckpt), "--images", str(bad), "--out", str(out), "--overwrite")
        == 1
    )


def test_a_checkpoint_of_another_kind_says_what_it_is(trained, tmp_path, capsys):
    shards, _ = trained
    pretraining = tmp_path / "last.ckpt"
    torch.save({"ssl_benthic": {"method": "byol"}, "state_dict": {}}, pretraining)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    for path, what in ((pretraining, "pretraining checkpoint"), (junk, "not a PyTorch checkpoint")):
        args = [
            "--checkpoint",
            str(path),
            "--shards",
            str(shards / "test"),
            "--out",
            str(tmp_path / "x.csv"),
        ]
        assert _predict(*args) == 2
        err = capsys.readouterr().err.strip()
        assert what in err and "expected a model.ckpt written by `hml-finetune train`" in err


def test_default_label_rule_is_expected_hops_and_min_probability_is_applied(trained, tmp_path):
    shards, ckpt = trained
    _, hierarchies, _ = load_finetuned(ckpt)
    runs = {
        "expected-hops": (),
        "min-probability": ("--label-rule", "min-probability", "--min-probability", "0.3"),
    }
    for rule, args in runs.items():
        out = tmp_path / f"{rule}.jsonl"
        assert _predict_jsonl(ckpt, shards / "test", out, *args) == 0
        for r in _jsonl(out):
            for head, h in hierarchies.items():
                pred = r["heads"][head]
                p = torch.tensor([[pred["probabilities"][n] for n in h.nodes]])
                if rule == "expected-hops":
                    want = expected_hops_labels(p, h)
                else:
                    want = min_probability_labels(p, h, 0.3)
                assert pred["label_rule"] == rule and pred["label"] == h.nodes[int(want[0])]
                assert pred["depth"] == h.depth[pred["label"]]


def test_an_undecodable_shard_sample_is_an_error_row(trained, tmp_path):
    """#22.12: the reader used to skip it, so the output had no row for it."""
    from ssl_benthic.data.shards.format import ShardSample
    from ssl_benthic.data.shards.writer import write_shards

    shards, ckpt = trained
    samples = [
        ShardSample(key, buf, "png", {k: v for k, v in meta.items() if not k.startswith("__")})
        for key, buf, meta in _raw_samples(shards / "test", 3)
    ]
    samples[1] = ShardSample("broken", b"\xff\xd8\xff\xe0 truncated", "jpg", {"image": "b.jpg"})
    write_shards(samples, tmp_path / "bad", name="bad")
    out = tmp_path / "e.jsonl"
    assert _predict_jsonl(ckpt, tmp_path / "bad", out) == 1
    records = _jsonl(out)
    assert [r["key"] for r in records] == [s.key for s in samples]
    assert records[1]["heads"] == {} and records[1]["image"] == "b.jpg" and records[1]["error"]
    assert all(r["heads"] and "error" not in r for r in (records[0], records[2]))


def _raw_samples(shards: Path, n: int) -> list[tuple[str, bytes, dict]]:
    """The first n samples of a shard folder as (key, PNG bytes, metadata)."""
    import io

    out = []
    for key, image, meta in iter_samples(shards):
        buf = io.BytesIO()
        image.save(buf, "PNG")
        out.append((key, buf.getvalue(), meta))
        if len(out) == n:
            break
    return out
