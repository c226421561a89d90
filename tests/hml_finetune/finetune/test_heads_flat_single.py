"""Flat multi-label heads (depth-1 hierarchies) and single-label heads next to the CATAMI heads:
encoding and masks, losses, errors, linear (cached) and finetune training, evaluate from model.ckpt,
the report."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixtures.finetune import make_cfg as tiny_finetune_cfg
from PIL import Image

from hml_finetune.compare.report import Cell, write_report
from hml_finetune.finetune.config import FinetuneConfig
from hml_finetune.finetune.data import TrainData
from hml_finetune.finetune.evaluate import evaluate_shards
from hml_finetune.finetune.features import extract_features
from hml_finetune.finetune.inference import load_finetuned
from hml_finetune.finetune.labels import (
    IGNORE_INDEX,
    LabelledSplit,
    build_hierarchies,
    default_schemes,
    encode_single,
    encode_split,
    read_split,
    single_classes,
)
from hml_finetune.finetune.lightning_module import HMLModule, build_losses, single_label_loss
from hml_finetune.finetune.model import image_transform
from hml_finetune.finetune.train import run_finetune
from ssl_benthic.core.config import ConfigError
from ssl_benthic.core.errors import LabelError
from ssl_benthic.data.shards.format import ShardSample
from ssl_benthic.data.shards.writer import write_shards

SPONGE = "[BIOTA] > Biota > Sponges"
CNIDARIA = "[BIOTA] > Biota > Cnidaria"
SAND = "[SUBSTRATE] > Substrate > Unconsolidated (soft) > Sand / mud (<2mm)"
BOULDERS = "[SUBSTRATE] > Substrate > Consolidated (hard) > Boulders"
COLOURS = ("red", "green", "blue")  # the tinted channel of the image
HABITAT = {"red": "reef", "green": "kelp", "blue": "sand"}  # follows the dominant tint
SPLITS = {"train": 48, "val": 24, "test": 24}


def _jpeg(tints: list[int], rng: np.random.Generator) -> bytes:
    """32x32 noise image with +110 on the tinted channels."""
    pixels = rng.integers(40, 110, size=(32, 32, 3))
    pixels[..., tints] += 110
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _sample(split: str, i: int, rng: np.random.Generator) -> ShardSample:
    tint = int(rng.integers(3))
    tints = [tint, (tint + 1) % 3] if i % 4 == 1 else [tint]  # some images carry two colours
    labels: dict[str, list[str]] = {
        "biota": [SPONGE if rng.random() < 0.5 else CNIDARIA],
        "substrate": [SAND if rng.random() < 0.5 else BOULDERS],
        "colour": [] if i % 5 == 0 else [COLOURS[t] for t in tints],  # every 5th unannotated
    }
    if i % 6 != 3:  # every 6th (offset) has no habitat at all
        labels["habitat"] = [HABITAT[COLOURS[tint]]]
    return ShardSample(f"{split}-{i:04d}", _jpeg(tints, rng), "jpg", {"labels": labels})


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("flat_single")
    for s, (split, n) in enumerate(SPLITS.items()):
        rng = np.random.default_rng(s)
        write_shards([_sample(split, i, rng) for i in range(n)], out / split, name=split)
    return out


def make_cfg(shards: Path, out: Path, *overrides: str) -> FinetuneConfig:
    """test_finetune's tiny recipe plus the colour (flat) and habitat (single-label) heads."""
    heads = ("heads.flat=[colour]", "heads.single=[habitat]", "loss.name=mcloss")
    return tiny_finetune_cfg(shards, out, *heads, *overrides)


def _scores(result: dict) -> dict:
    keys = ("au_prc", "macro_recall", "macro_f1", "micro_f1")
    return {h: [m[k] for k in keys] for h, m in result["heads"].items()}


# ----------------------------------------------------------------------------- end to end
def test_linear_probe_scores_flat_and_single_heads_and_evaluate_reproduces(shards, tmp_path):
    cfg = make_cfg(shards, tmp_path / "run", "trainer.max_epochs=15", "optimizer.lr=0.03")
    result = run_finetune(cfg)
    heads = result["heads"]
    assert list(heads) == ["biota", "substrate", "colour", "habitat"]
    colour, habitat = heads["colour"], heads["habitat"]
    assert colour["kind"] == "flat" and heads["biota"]["kind"] == "hierarchical"
    assert colour["n_nodes"] == 3 and set(colour["per_depth"]) == {1}
    assert {r["node"] for r in colour["per_node"]} == {f"[COLOUR] > {c}" for c in COLOURS}
    for key in ("au_prc", "macro_recall", "macro_f1", "rare_recall", "accuracy", "macro_accuracy"):
        assert key in habitat, key
    assert habitat["macro_recall"] == habitat["macro_accuracy"]

    model, hierarchies, meta = load_finetuned(tmp_path / "run" / "model.ckpt")
    h = hierarchies["colour"]
    assert h.roots == ["[COLOUR]"] and int(h.depth_array.max()) == 1 and len(h) == 4
    assert meta["single"] == {"habitat": ["kelp", "reef", "sand"]}
    # oracle: argmax of the reloaded model on the test images vs the annotated habitats
    transform = image_transform(32, meta["mean"], meta["std"], augment=False)
    feats, keys = extract_features(model.backbone, shards / "test", transform, 8)
    pred = model.predict_features(feats)["habitat"].argmax(1)
    test = read_split(shards / "test")
    truth = dict(zip(test.keys, test.labels, strict=True))
    hits = [
        meta["single"]["habitat"][int(p)] == truth[k]["habitat"][0]
        for k, p in zip(keys, pred, strict=True)
        if truth[k].get("habitat")
    ]
    assert habitat["n_annotated"] == len(hits) == 20
    assert habitat["accuracy"] == pytest.approx(sum(hits) / len(hits))
    assert habitat["accuracy"] >= 0.8  # learnable from the tint (1.0 measured); chance ~1/3
    assert colour["au_prc"] > 0.8  # 1.0 measured; ~0.42 of the known entries are positive

    again = evaluate_shards(tmp_path / "run" / "model.ckpt", shards / "test", tmp_path / "eval")
    for head, scores in _scores(result).items():
        assert _scores(again)[head] == pytest.approx(scores, nan_ok=True), head
    assert again["heads"]["habitat"]["accuracy"] == pytest.approx(habitat["accuracy"])
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["heads"]["habitat"]["macro_f1"] == pytest.approx(habitat["macro_f1"])
    assert "| habitat |" in (tmp_path / "run" / "metrics.md").read_text()

    cell = Cell("random", "linear", "mcloss", 0, tmp_path / "run", "done", result=saved)
    report = write_report(tmp_path / "report", [cell]).read_text()
    assert "### habitat" in report and "### colour" in report
    rows = json.loads((tmp_path / "report" / "results.json").read_text())
    row = next(r for r in rows if r["head"] == "habitat")
    assert row["macro_recall"] == pytest.approx(habitat["macro_accuracy"])
    assert (tmp_path / "report" / "plots" / "habitat_pr.png").is_file()


def test_finetune_mode_encodes_flat_and_single_labels_from_the_shards(shards, tmp_path):
    cfg = make_cfg(shards, tmp_path / "ft", "mode=finetune", "trainer.max_epochs=1")
    result = run_finetune(cfg)
    assert {"colour", "habitat"} <= set(result["heads"])
    log = (tmp_path / "ft" / "logs" / "version_0" / "metrics.csv").read_text()
    assert "train/loss_colour" in log and "train/loss_habitat" in log
    model, _, _ = load_finetuned(tmp_path / "ft" / "model.ckpt")
    assert set(model.single_heads) == {"habitat"}


# ----------------------------------------------------------------------------- masks, losses
def test_flat_head_is_depth_one_and_unannotated_samples_get_zero_gradient(shards, tmp_path):
    split = LabelledSplit(
        ["a", "b", "c"],
        [
            {"biota": [SPONGE], "colour": ["red"]},
            {"biota": [CNIDARIA]},  # colour unannotated
            {"colour": ["green", "blue"], "substrate": [SAND]},
        ],
    )
    schemes = default_schemes(["biota", "substrate"], flat=["colour"])
    hier = build_hierarchies([split], schemes)
    h = hier["colour"]
    assert list(hier) == ["biota", "substrate", "colour"]
    assert h.nodes == ["[COLOUR]", "[COLOUR] > blue", "[COLOUR] > green", "[COLOUR] > red"]
    y, m = encode_split(split, hier, schemes)["colour"]
    assert y.tolist() == [[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 0]]
    assert m.tolist() == [[1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]]  # siblings: known negatives

    cfg = make_cfg(shards, tmp_path)  # plain MCLoss
    data = TrainData(split, encode_split(split, hier, schemes))
    module = HMLModule(cfg, None, hier, build_losses(cfg, hier, data.targets), data, None, {})
    logits = {name: torch.randn(1, 3, len(x), requires_grad=True) for name, x in hier.items()}
    _, per_head = module.compute_loss(logits, data.targets)
    per_head["colour"].backward()
    g = logits["colour"].grad[0]
    assert torch.all(g[1] == 0)  # the unannotated sample
    assert torch.all(g[:, 0] == 0)  # the root is never trained
    assert torch.all(g[[0, 2], 1:] != 0)
    # max-constraint = identity on the classes: MCLoss is BCE over the known class entries
    z, known = logits["colour"][0].detach()[:, 1:], m[:, 1:] > 0
    expect = F.binary_cross_entropy_with_logits(z[known], y[:, 1:][known])
    assert per_head["colour"].item() == pytest.approx(expect.item(), rel=1e-6)


def test_single_label_loss_ignores_unannotated_samples(shards, tmp_path):
    logits = torch.tensor(
        [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], [1.0, 1.0, 1.0]], requires_grad=True
    )
    y = torch.tensor([0, IGNORE_INDEX, 2, IGNORE_INDEX])
    loss = single_label_loss(logits, y)
    expect = F.cross_entropy(logits[[0, 2]], y[[0, 2]])
    assert loss.item() == pytest.approx(expect.item())
    loss.backward()
    assert torch.all(logits.grad[[1, 3]] == 0) and torch.all(logits.grad[[0, 2]] != 0)
    # a batch with no annotated sample: exactly 0, no NaN
    none = single_label_loss(logits, torch.full((4,), IGNORE_INDEX))
    assert none.item() == 0.0
    # through the module, beside an HML head
    split = LabelledSplit(["a"], [{"biota": [SPONGE]}])
    hier = build_hierarchies([split])
    data = TrainData(split, encode_split(split, hier))
    cfg = make_cfg(shards, tmp_path)
    module = HMLModule(cfg, None, hier, build_losses(cfg, hier, data.targets), data, None, {})
    both = {"biota": torch.zeros(1, 4, len(hier["biota"])), "habitat": logits.detach()}
    k = len(hier["biota"])
    targets = {"biota": (data.targets["biota"][0].expand(4, -1), torch.zeros(4, k))}
    total, per_head = module.compute_loss(both, targets, {"habitat": y})
    assert per_head["habitat"].item() == pytest.approx(expect.item())
    assert total.item() == pytest.approx(expect.item())  # the biota head is fully masked


# ----------------------------------------------------------------------------- errors
def test_two_labels_in_a_single_label_head_fail_naming_the_sample():
    split = LabelledSplit(
        ["ok-1", "ok-2", "bad-7"],
        [{"habitat": ["reef"]}, {"habitat": ["kelp"]}, {"habitat": ["reef", "kelp"]}],
        "train/",
    )
    with pytest.raises(ValueError, match=r"train/: sample 'bad-7'.*'habitat' has 2 labels"):
        single_classes([split], ["habitat"])
    with pytest.raises(ValueError, match=r"sample 'bad-7'.*'habitat' has 2 labels"):
        encode_single([["reef"], ["reef", "kelp"]], ["kelp", "reef"], ["ok-1", "bad-7"], "habitat")
    with pytest.raises(ValueError, match=r"sample 'k9'.*unknown class 'sand'"):
        encode_single([["sand"]], ["kelp", "reef"], ["k9"], "habitat")
    with pytest.raises(ValueError, match=r"'habitat' has 1 class"):
        single_classes([split.subset([0])], ["habitat"])
    assert single_classes([split.subset([0, 1])], ["habitat"]) == {"habitat": ["kelp", "reef"]}


def test_flat_and_single_head_config_and_label_errors(shards, tmp_path):
    undeclared = LabelledSplit(["u-1"], [{"biota": [SPONGE], "colour": ["red"]}])
    # any other head is an ordinary HML head, its scheme the data's own labels
    assert build_hierarchies([undeclared])["colour"].nodes == ["[COLOUR]", "[COLOUR] > red"]
    bad_name = LabelledSplit(["p-2"], [{"colour": ["red > dark"]}])
    with pytest.raises(LabelError, match=r"sample 'p-2': flat head 'colour'"):
        build_hierarchies([bad_name], flat=["colour"])
    with pytest.raises(ConfigError, match=r"heads\.flat: 'biota' is a CATAMI head"):
        make_cfg(shards, tmp_path, "heads.flat=[biota]", "heads.single=[]")
    with pytest.raises(ConfigError, match=r"both list \['colour'\]"):
        make_cfg(shards, tmp_path, "heads.single=[colour]")
