"""Stage 2 on images: train/evaluate end to end on tiny shards, masks and gradients, frozen encoder,
cached vs uncached probe, weight loading errors, encoder noise, train_fraction, label errors."""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from pathlib import Path

import pytest
import pytorch_lightning as pl
import timm
import torch
from fixtures.finetune import make_cfg
from safetensors.torch import save_file

from hml_finetune.finetune.config import FinetuneConfig
from hml_finetune.finetune.data import TrainData
from hml_finetune.finetune.evaluate import evaluate_shards
from hml_finetune.finetune.inference import load_finetuned
from hml_finetune.finetune.labels import (
    LabelledSplit,
    build_hierarchies,
    encode_split,
    read_split,
    strata,
    stratified_subset,
)
from hml_finetune.finetune.lightning_module import HMLModule, _lr_factor, build_losses
from hml_finetune.finetune.model import NOISE_STREAM, HMLModel, build_backbone
from hml_finetune.finetune.train import resolve_strategy, run_finetune
from hml_finetune.hml.label_rules import monotone_thresholds
from ssl_benthic.core.config import load_config
from ssl_benthic.core.errors import LabelError
from ssl_benthic.data.sample.make_sample import make_sample
from ssl_benthic.weights.backbones import BackboneError

SPONGE = "[BIOTA] > Biota > Sponges"
MASSIVE = "[BIOTA] > Biota > Sponges > Massive forms"
CNIDARIA = "[BIOTA] > Biota > Cnidaria"
SAND = "[SUBSTRATE] > Substrate > Unconsolidated (soft) > Sand / mud (<2mm)"
BOULDERS = "[SUBSTRATE] > Substrate > Consolidated (hard) > Boulders"


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    make_sample(out, seed=0, n_unlabelled=0, n_labelled=60, size=32)
    return out


def fresh_backbone(cfg: FinetuneConfig) -> torch.nn.Module:
    """The backbone run_finetune starts from: seeded by the run seed before it is built."""
    torch.manual_seed(cfg.seed)
    return build_backbone(cfg.backbone, cfg.encoder_noise, cfg.seed)


def heads_scores(result: dict) -> dict:
    return {h: (m["au_prc"], m["macro_f1"], m["micro_recall"]) for h, m in result["heads"].items()}


# ----------------------------------------------------------------------------- end to end
def test_linear_probe_cached_equals_uncached_and_freezes_encoder(shards, tmp_path):
    cached = run_finetune(make_cfg(shards, tmp_path / "cached"))
    uncached_cfg = make_cfg(shards, tmp_path / "uncached", "cache_features=false")
    uncached = run_finetune(uncached_cfg)

    assert set(cached["heads"]) == {"biota", "substrate", "relief", "bedforms"}
    for head, (au, f1, rec) in heads_scores(cached).items():
        au2, f12, rec2 = heads_scores(uncached)[head]
        assert au == pytest.approx(au2, abs=1e-6) and f1 == pytest.approx(f12, abs=1e-6), head
        assert rec == pytest.approx(rec2, abs=1e-6), head
    # the encoder's weights AND batch-norm statistics are those it started from
    model, _, _ = load_finetuned(tmp_path / "uncached" / "model.ckpt")
    start = fresh_backbone(uncached_cfg).state_dict()
    trained = model.backbone.state_dict()
    assert any("running_mean" in k for k in start)
    for key, value in start.items():
        assert torch.equal(trained[key], value), key


def test_run_writes_results_and_evaluate_reproduces_them(shards, tmp_path):
    out = tmp_path / "run"
    result = run_finetune(make_cfg(shards, out, "threshold=per-node", "loss.name=weighted_focal"))
    for name in (
        "metrics.json",
        "metrics.md",
        "config.yaml",
        "model.ckpt",
        "checkpoints/last.ckpt",
    ):
        assert (out / name).is_file(), name
    assert result["start"] == "random" and result["mode"] == "linear" and result["seed"] == 0
    biota = result["heads"]["biota"]
    k = len(biota["threshold_value"])  # per-node thresholds: one per node
    assert k == biota["n_nodes"] + 1  # + the root
    rows = biota["per_node"]
    assert len(rows) == biota["n_nodes"]
    assert {"node", "depth", "train_freq", "recall", "f1", "ap"} <= set(rows[0])
    # rare: seen in training (n_j > 0) but below 0.05; test-only nodes (n_j = 0) are unseen
    rare = [r["recall"] for r in rows if r["test_positives"] and 0 < r["train_freq"] < 0.05]
    expect = sum(rare) / len(rare) if rare else math.nan
    assert biota["rare_recall"] == pytest.approx(expect, nan_ok=True)
    unseen = [r for r in rows if r["test_positives"] and r["train_freq"] == 0]
    assert biota["n_unseen_nodes"] == len(unseen) and biota["n_rare_nodes"] == len(rare)
    assert 2 <= len(biota["pr_curve"]["precision"]) <= 200
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["heads"]["substrate"]["au_prc"] == pytest.approx(
        result["heads"]["substrate"]["au_prc"]
    )
    # the resolved config reloads, with the statistics that were used
    cfg = load_config(FinetuneConfig, out / "config.yaml")
    assert cfg.data.mean == (0.363, 0.420, 0.344)
    again = evaluate_shards(out / "model.ckpt", shards / "test", tmp_path / "eval")
    for head, scores in heads_scores(result).items():
        assert heads_scores(again)[head] == pytest.approx(scores), head
    assert (tmp_path / "eval" / "metrics.json").is_file()
    _check_calibration_and_answers(out / "model.ckpt", result, again, tmp_path)
    assert "## Hierarchical scores" in (out / "metrics.md").read_text()


def _check_calibration_and_answers(ckpt_path: Path, result: dict, again: dict, tmp: Path) -> None:
    """#20: temperatures fitted and stored; thresholds stored monotone (the applied ones);
    evaluate reproduces the hierarchical block; a checkpoint without temperatures loads T = 1."""
    ckpt = torch.load(ckpt_path, weights_only=True)
    meta = ckpt["hml_finetune"]
    model, hierarchies, _ = load_finetuned(ckpt_path)
    assert set(meta["temperatures"]) == set(hierarchies) == set(model.temperatures)
    for head, h in hierarchies.items():
        t = meta["temperatures"][head]
        assert result["heads"][head]["temperature"] == t and 0.05 <= t <= 20
        stored = torch.tensor(meta["thresholds"][head])
        assert torch.equal(monotone_thresholds(stored, h), stored)
        block, evaluated = (
            result["heads"][head]["hierarchical"],
            again["heads"][head]["hierarchical"],
        )
        for key in ("h_f1", "hop_distance", "ece", "ece_uncalibrated", "mistake_severity"):
            assert evaluated[key] == pytest.approx(block[key], nan_ok=True), (head, key)
        assert block["label_rule"] == "expected-hops"
        assert set(block["hop_distance_by_rule"]) == {
            "expected-hops",
            "threshold",
            "min-probability",
        }
    del meta["temperatures"]
    torch.save(ckpt, tmp / "old.ckpt")
    assert load_finetuned(tmp / "old.ckpt")[0].temperatures == {}


def test_finetune_trains_encoder_on_a_fraction_and_resumes(shards, tmp_path):
    cfg = make_cfg(
        shards,
        tmp_path / "ft",
        "mode=finetune",
        "train_fraction=0.5",
        "trainer.max_epochs=1",
        "data.shuffle=true",
        "data.shuffle_buffer=16",
    )
    result = run_finetune(cfg)
    assert result["n_train"] == 18  # round(0.5 * 36)
    model, _, _ = load_finetuned(tmp_path / "ft" / "model.ckpt")
    start = fresh_backbone(cfg).state_dict()
    assert not torch.equal(model.backbone.state_dict()["conv1.0.weight"], start["conv1.0.weight"])
    run_finetune(
        make_cfg(
            shards,
            tmp_path / "ft",
            "mode=finetune",
            "train_fraction=0.5",
            "trainer.max_epochs=2",
            "data.shuffle=true",
            "data.shuffle_buffer=16",
        ),
        resume="last",
    )
    last = torch.load(tmp_path / "ft" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2 * (18 // 8)
    with open(tmp_path / "ft" / "logs" / "version_1" / "metrics.csv") as fh:
        steps = [int(row["step"]) for row in csv.DictReader(fh)]
    assert min(steps) == 18 // 8  # the resumed run started after the first epoch's steps


class _Snapshots(pl.Callback):
    """Backbone and head state (weights and BN statistics) at the end of each training epoch."""

    def __init__(self) -> None:
        self.backbone: list[dict] = []
        self.heads: list[dict] = []

    def on_train_epoch_end(self, trainer, module) -> None:
        copy = lambda m: {k: v.detach().clone() for k, v in m.state_dict().items()}  # noqa: E731
        self.backbone.append(copy(module.model.backbone))
        self.heads.append(copy(module.model.heads))


def test_lpft_holds_the_encoder_for_its_frozen_epochs_then_trains_it(shards, tmp_path):
    cfg = make_cfg(
        shards, tmp_path / "lpft", "mode=finetune", "trainer.max_epochs=2",
        "optimizer.encoder_frozen_epochs=1",
    )  # fmt: skip
    start = fresh_backbone(cfg).state_dict()
    snaps = _Snapshots()
    run_finetune(cfg, callbacks=[snaps])
    same = lambda a, b: all(torch.equal(a[k], b[k]) for k in a)  # noqa: E731
    # epoch 1: weights AND running BN statistics untouched; the heads moved
    assert same(snaps.backbone[0], start)
    assert not same(snaps.heads[1], snaps.heads[0])
    # epoch 2: the encoder trains (weights and BN statistics change)
    moved = [k for k in start if not torch.equal(snaps.backbone[1][k], start[k])]
    assert any(k.endswith("running_mean") for k in moved) and "conv1.0.weight" in moved


class _RecordRank(pl.Callback):
    """Per rank (ddp_spawn children): the shards read and the final weights, written to `out`."""

    def __init__(self, out: Path) -> None:
        self.out, self.urls = out, set()

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        epoch = trainer.current_epoch  # shards are dealt to ranks afresh every epoch
        if isinstance(batch[1], list):  # images + metas (cached features carry no metas)
            self.urls |= {f"{epoch}:{Path(m['__url__']).name}" for m in batch[1]}
        else:
            self.urls |= {f"{epoch}:{float(batch[0].sum()):.6f}"}

    def on_train_end(self, trainer, module) -> None:
        r = trainer.global_rank
        (self.out / f"urls{r}.json").write_text(json.dumps(sorted(self.urls)))
        params = {k: v.detach().cpu() for k, v in module.model.named_parameters()}
        torch.save(params, self.out / f"state{r}.pt")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["finetune", "linear"])
def test_two_ddp_processes(shards, tmp_path, mode):
    """Stage 2 under DDP (gloo, CPU): ranks read disjoint shards (finetune) or disjoint batches of
    cached features (linear), end with identical weights, and LP-FT's held encoder does not stall
    DDP's gradient reduction. (BN running statistics are rank 0's at each forward, as DDP
    broadcasts buffers; SyncBatchNorm is GPU-only.)"""
    out = tmp_path / "ddp"
    lpft = ["optimizer.encoder_frozen_epochs=1"] if mode == "finetune" else []
    cfg = make_cfg(
        shards, out, f"mode={mode}", "trainer.devices=2", "trainer.strategy=ddp_spawn",
        "trainer.max_epochs=2", "data.batch_size=4", "data.shuffle=true", *lpft,
    )  # fmt: skip
    out.mkdir(parents=True)
    result = run_finetune(cfg, callbacks=[_RecordRank(out)])
    assert set(result["heads"]) >= {"biota", "substrate"}
    urls = [set(json.loads((out / f"urls{r}.json").read_text())) for r in (0, 1)]
    assert urls[0] and urls[1] and not urls[0] & urls[1]
    s0, s1 = (torch.load(out / f"state{r}.pt", weights_only=True) for r in (0, 1))
    assert [k for k in s0 if not torch.equal(s0[k], s1[k])] == []
    if mode == "finetune":
        start = fresh_backbone(cfg).state_dict()
        assert not torch.equal(s0["backbone.conv1.0.weight"], start["conv1.0.weight"])


def test_lr_schedule_delays_the_encoder_by_its_frozen_steps():
    # 10 steps, encoder frozen for 4, then lightly's warm-up over 2 (reaching 1 at its end) and
    # cosine (1 + cos(pi i / 3)) / 2 from 1 to floor 0 over the last 4 steps
    factors = [_lr_factor(s, total=10, warmup=2, floor=0.0, delay=4) for s in range(10)]
    assert factors == pytest.approx([0, 0, 0, 0, 0.5, 1.0, 1.0, 0.75, 0.25, 0.0])
    heads = [_lr_factor(s, total=10, warmup=2, floor=0.0) for s in range(3)]
    assert heads == pytest.approx([0.5, 1.0, 1.0])  # no delay: the same clock from step 0


def test_lpft_under_ddp_finds_unused_parameters(shards, tmp_path):
    cfg = make_cfg(shards, tmp_path, "mode=finetune", "optimizer.encoder_frozen_epochs=1")
    assert resolve_strategy(cfg) == "auto"  # one device: no DDP
    two = make_cfg(shards, tmp_path, "mode=finetune", "optimizer.encoder_frozen_epochs=1",
                   "trainer.devices=2")  # fmt: skip
    assert resolve_strategy(two) == "ddp_find_unused_parameters_true"
    plain = make_cfg(shards, tmp_path, "mode=finetune", "trainer.devices=2")
    assert resolve_strategy(plain) == "auto"
    with pytest.raises(ValueError, match="encoder_frozen_epochs 3"):
        make_cfg(shards, tmp_path, "mode=finetune", "optimizer.encoder_frozen_epochs=3").validate()


# ----------------------------------------------------------------------------- gradients
def test_masked_entries_and_unannotated_heads_get_zero_gradient(shards, tmp_path):
    split = LabelledSplit(
        ["a", "b", "c"],
        [
            {"biota": [SPONGE], "substrate": [SAND]},  # stops at Sponges: its children unknown
            {"substrate": [BOULDERS]},  # biota unannotated
            {"biota": [MASSIVE, CNIDARIA], "substrate": []},
        ],
    )
    hier = build_hierarchies([split])
    targets = encode_split(split, hier)
    cfg = make_cfg(shards, tmp_path, "loss.name=weighted_focal", "heads.n_heads=2")
    data = TrainData(split, targets)
    module = HMLModule(cfg, None, hier, build_losses(cfg, hier, targets), data, None, {})
    logits = {h: torch.randn(2, 3, len(x), requires_grad=True) for h, x in hier.items()}
    total, _ = module.compute_loss(logits, targets)
    total.backward()
    bio, sub = hier["biota"], hier["substrate"]
    g_bio, g_sub = logits["biota"].grad, logits["substrate"].grad
    assert torch.all(g_bio[:, 1] == 0)  # unannotated head of sample b
    assert torch.all(g_sub[:, 2] == 0)  # empty list = unannotated
    assert torch.all(g_bio[:, 0, bio.index[MASSIVE]] == 0)  # below a label that stops early
    assert torch.all(g_bio[:, :, bio.index["[BIOTA]"]] == 0)  # roots are never trained
    assert torch.all(g_bio[:, 0, bio.index[SPONGE]] != 0)
    assert torch.all(g_bio[:, 2, bio.index[MASSIVE]] != 0)  # known where another label says so
    assert torch.all(g_sub[:, 1, sub.index[SAND]] != 0)  # a known negative


# ----------------------------------------------------------------------------- weights
def _save_state(model: torch.nn.Module, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_wrong_architecture_fails_naming_the_key(shards, tmp_path):
    path = _save_state(timm.create_model("resnet26", num_classes=0), tmp_path / "w.safetensors")
    cfg = make_cfg(shards, tmp_path, "backbone.name=resnet10t", f"backbone.weights={path}")
    with pytest.raises(BackboneError, match=r"shape mismatch at 'layer1\.0\.conv1\.weight'"):
        build_backbone(cfg.backbone)


def test_encoder_noise_mixes_fresh_weights(shards, tmp_path):
    torch.manual_seed(123)
    start = timm.create_model("resnet10t", num_classes=0)
    path = _save_state(start, tmp_path / "w.safetensors")
    base = start.state_dict()

    def build(alpha: float, seed: int = 0) -> dict:
        cfg = make_cfg(shards, tmp_path, f"backbone.weights={path}", f"encoder_noise={alpha}")
        return build_backbone(cfg.backbone, cfg.encoder_noise, seed).state_dict()

    torch.manual_seed(NOISE_STREAM)
    fresh = timm.create_model("resnet10t", num_classes=0).state_dict()
    zero, one, half = build(0.0), build(1.0), build(0.5)
    for key, value in base.items():
        assert torch.equal(zero[key], value), key
        if value.is_floating_point():
            assert torch.equal(one[key], fresh[key]), key
            assert torch.allclose(half[key], 0.5 * value + 0.5 * fresh[key], atol=1e-6), key
    assert not torch.equal(one["conv1.0.weight"], base["conv1.0.weight"])
    assert not torch.equal(build(1.0, seed=1)["conv1.0.weight"], one["conv1.0.weight"])


# ----------------------------------------------------------------------------- subsets, labels
def _split_of(groups: list[tuple[dict, int]]) -> LabelledSplit:
    labels = [lab for lab, n in groups for _ in range(n)]
    return LabelledSplit([f"s{i:04d}" for i in range(len(labels))], labels)


def test_train_fraction_is_seeded_and_stratified():
    split = _split_of(
        [
            ({"biota": [SPONGE]}, 100),
            ({"biota": [MASSIVE], "substrate": [SAND]}, 60),
            ({"substrate": [BOULDERS]}, 40),
            # two (head, depth) strata too small for one sample at 1/4: merged by annotated heads
            ({"biota": [CNIDARIA], "substrate": [BOULDERS]}, 2),
            ({"biota": [SPONGE], "substrate": ["[SUBSTRATE] > Substrate"]}, 2),
        ]
    )
    a = stratified_subset(split, 0.25, seed=0)
    assert len(a) == round(204 * 0.25)
    assert list(a) == list(stratified_subset(split, 0.25, seed=0))
    assert list(a) != list(stratified_subset(split, 0.25, seed=1))
    counts = Counter(json.dumps(split.labels[i], sort_keys=True) for i in a)
    assert counts[json.dumps({"biota": [SPONGE]})] == 25
    assert counts[json.dumps({"biota": [MASSIVE], "substrate": [SAND]})] == 15
    assert counts[json.dumps({"substrate": [BOULDERS]})] == 10
    assert sum(1 for i in a if i >= 200) == 1
    assert strata(split, 0.25)[-1] == ("coarse", ("biota", "substrate"))
    assert list(stratified_subset(split, 1.0, seed=3)) == list(range(204))


def test_label_errors_name_the_sample(shards):
    bad = LabelledSplit(
        ["k1", "k2"], [{"biota": [SPONGE]}, {"biota": ["[BIOTA] > Biota > Spongez"]}]
    )
    with pytest.raises(
        LabelError,
        match=r"sample 'k2'.*Spongez.*not in the scheme catami; the nearest path is "
        r"'\[BIOTA\] > Biota > Sponges'",
    ):
        build_hierarchies([bad])
    hier = build_hierarchies([read_split(shards / "train")])
    unseen = "[BIOTA] > Biota > Ascidians > Stalked > Colonial"  # CATAMI, but not in this data
    other = LabelledSplit(["t-7"], [{"biota": [unseen]}])
    with pytest.raises(ValueError, match=r"Ascidians > Stalked > Colonial.*'t-7'"):
        encode_split(other, hier)
    wrong_head = LabelledSplit(["t-8"], [{"substrate": [SPONGE]}])
    with pytest.raises(
        LabelError, match=r"'t-8'.*filed under head 'substrate' but belongs to 'biota'"
    ):
        build_hierarchies([wrong_head])


FINETUNE_RECIPES = sorted(
    p for p in Path("configs/finetune").glob("*.yaml") if not p.name.startswith("compare")
)


@pytest.mark.parametrize("recipe", FINETUNE_RECIPES, ids=lambda p: p.name)
def test_shipped_configs_load(recipe: Path) -> None:
    """Each recipe's mode is the one its name says, the _sample ones read the sample's splits (and
    only they do), and each writes to a folder named for it."""
    name = recipe.stem
    cfg = load_config(FinetuneConfig, recipe)
    assert cfg.mode == name.removesuffix("_sample")
    splits = (cfg.data.train, cfg.data.val, cfg.data.test)
    sample = tuple(f"shards/sample/{s}" for s in ("train", "val", "test"))
    assert (splits == sample) == name.endswith("_sample"), splits
    assert Path(cfg.output_dir).name == name


def test_the_finetune_recipes_are_all_there() -> None:
    names = {p.stem for p in FINETUNE_RECIPES}
    assert {"linear", "linear_sample", "finetune", "finetune_sample"} <= names


def test_frozen_backbone_stays_in_eval_mode_when_training():
    hier = build_hierarchies([LabelledSplit(["a"], [{"biota": [SPONGE]}])])
    heads_cfg = FinetuneConfig().heads
    frozen = HMLModel(timm.create_model("resnet10t", num_classes=0), hier, heads_cfg, True).train()
    assert not any(m.training for m in frozen.backbone.modules())
    assert all(m.training for m in frozen.heads.modules())
    assert not any(p.requires_grad for p in frozen.backbone.parameters())
    tuned = HMLModel(timm.create_model("resnet10t", num_classes=0), hier, heads_cfg, False).train()
    assert all(m.training for m in tuned.backbone.modules())
