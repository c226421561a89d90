"""Foundation starts in `compare`: an imported ViT start runs linear on one's own shard folders
(`data:`), a start whose weights are not there is skipped with a line, the report's difference to
the best generic start is the hand-computed one, and `sample:` never writes into a user's folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
import yaml
from fixtures.pretrain import make_shards
from safetensors.torch import save_file

import hml_finetune.compare.run as compare
from hml_finetune.cli import main
from hml_finetune.compare.config import CompareConfig
from hml_finetune.compare.report import Cell, best_generic, write_report
from ssl_benthic.core.config import ConfigError, from_dict, load_config
from ssl_benthic.weights.import_weights import import_weights

REPO = Path(__file__).resolve().parents[3]
VIT = "vit_tiny_patch16_224"


def tiny_vit_import(tmp: Path) -> Path:
    """A random tiny ViT (32 px, 8 px patches) imported as a user imports a downloaded file."""
    torch.manual_seed(0)
    kwargs = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
    model = timm.create_model(VIT, pretrained=False, num_classes=0, **kwargs)
    save_file(model.state_dict(), str(tmp / "vit.safetensors"))
    import_weights(
        tmp / "vit.safetensors", tmp / "vit", timm_name=VIT, model_kwargs={"num_heads": 2}
    )
    return tmp / "vit"


def own_shards(tmp: Path) -> dict[str, str]:
    return {
        split: str(make_shards(tmp / "mine" / split, n=n, seed=i, labelled=True))
        for i, (split, n) in enumerate((("train", 16), ("val", 8), ("test", 8)))
    }


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_an_imported_vit_start_on_own_data_and_a_missing_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = own_shards(tmp_path)
    before = _files(tmp_path / "mine")
    raw = {
        "base": str(REPO / "configs/finetune/linear_sample.yaml"),
        "base_overrides": ["data.img_size=32", "data.batch_size=8", "trainer.max_epochs=2"],
        "data": data,
        "sample": None,
        "starts": [
            {"name": "dinov2", "weights": str(tiny_vit_import(tmp_path)), "generic": True},
            {"name": "bioclip2", "weights": str(tmp_path / "not_downloaded"), "generic": True},
        ],
        "losses": [{"name": "weighted", "overrides": ["loss.name=weighted"]}],
        "seeds": [0],
        "output_dir": str(tmp_path / "grid"),
    }
    (tmp_path / "compare.yaml").write_text(yaml.safe_dump(raw))
    assert main(["compare", "--config", str(tmp_path / "compare.yaml")]) == 0
    out = tmp_path / "grid"
    metrics = json.loads((out / "runs/dinov2-linear-weighted-s0/metrics.json").read_text())
    assert metrics["pool"] == "cls" and metrics["start"] == str(tmp_path / "vit")
    config = yaml.safe_load((out / "runs/dinov2-linear-weighted-s0/config.yaml").read_text())
    assert config["backbone"]["name"] == VIT  # from the import's JSON
    assert config["data"]["train"] == data["train"] and config["data"]["test"] == data["test"]
    report = (out / "report.md").read_text()
    assert f"| bioclip2-linear-weighted-s0 | skipped | skipped: no weights at {tmp_path}" in report
    assert "| dinov2 | linear | weighted | dinov2 | +0.000 (1) |" in report
    assert "#### substrate: F1 per depth (micro)" in report
    assert _files(tmp_path / "mine") == before  # one's own shards are read, never written


def _cell(start: str, seed: int, au: float, f1: float) -> Cell:
    head = {
        "au_prc": au,
        "macro_f1": f1,
        "macro_recall": 0.5,
        "rare_recall": None,
        "per_depth": {"1": {"f1_micro": f1}, "2": {"f1_micro": f1 / 2}},
    }
    return Cell(
        start,
        "linear",
        "w",
        seed,
        Path(f"/nowhere/{start}{seed}"),
        "done",
        None,
        {"heads": {"substrate": head}},
    )


def test_the_difference_to_the_best_generic_start_by_hand(tmp_path: Path) -> None:
    table = {  # start: [(AU(PRC), macro F1) of seed 0, of seed 1]
        "imagenet": [(0.3, 0.2), (0.5, 0.4)],  # mean AU(PRC) 0.4
        "dinov2": [(0.5, 0.5), (0.7, 0.3)],  # 0.6: the best generic start
        "ssl": [(0.8, 0.6), (0.7, 0.1)],  # in-domain: higher, but it is not generic
    }
    cells = [
        _cell(s, seed, au, f1) for s, rows in table.items() for seed, (au, f1) in enumerate(rows)
    ]
    assert best_generic(cells, "substrate", {"imagenet", "dinov2"}) == {("linear", "w"): "dinov2"}
    report = write_report(tmp_path, cells, plots=False, generic=["imagenet", "dinov2"]).read_text()
    # ssl - dinov2 per seed: AU(PRC) 0.3, 0.0 -> mean 0.15, sample std sqrt(2 * 0.15^2) = 0.212;
    # macro F1 0.1, -0.2 -> mean -0.05, std sqrt(0.15^2 + 0.15^2) = 0.212; no rare recall
    assert "| ssl | linear | w | dinov2 | +0.150 ± 0.212 (2) | -0.050 ± 0.212 (2) | - |" in report
    # imagenet - dinov2: AU(PRC) -0.2, -0.2; macro F1 -0.3, +0.1 -> -0.1 ± 0.283
    assert (
        "| imagenet | linear | w | dinov2 | -0.200 ± 0.000 (2) | -0.100 ± 0.283 (2) | - |" in report
    )
    assert "| dinov2 | linear | w | dinov2 | +0.000 ± 0.000 (2) |" in report
    # F1 per depth: ssl depth 1 = macro F1 above (0.6, 0.1): 0.35 ± 0.354; depth 2 halves it
    assert "| ssl | linear | w | 0.350 ± 0.354 | 0.175 ± 0.177 |" in report
    no_generic = write_report(tmp_path / "b", cells, plots=False).read_text()
    assert "difference to the best generic" not in no_generic


def test_sample_never_writes_into_a_users_folder(tmp_path: Path) -> None:
    data = own_shards(tmp_path)
    before = _files(tmp_path / "mine")
    cfg = from_dict(
        CompareConfig,
        {
            "base": str(REPO / "configs/finetune/linear_sample.yaml"),
            "sample": str(tmp_path / "mine"),
            "starts": [{"name": "random"}],
            "output_dir": str(tmp_path / "grid"),
        },
    )
    with pytest.raises(
        ConfigError, match=r"is not the synthetic sample.*nothing was written.*data:"
    ):
        compare.run_compare(cfg)
    assert _files(tmp_path / "mine") == before and not (tmp_path / "grid").exists()
    both = {"base": cfg.base, "starts": [{"name": "random"}], "data": data}
    with pytest.raises(ConfigError, match="'data' and 'sample' are both set"):
        from_dict(CompareConfig, both)  # sample keeps its default: refused, not silently ignored
    missing: dict[str, Any] = {
        **both,
        "sample": None,
        "data": {**data, "val": str(tmp_path / "nope")},
    }
    with pytest.raises(ConfigError, match="data.val"):
        from_dict(CompareConfig, missing).check_inputs()


def test_the_foundation_recipe_loads_and_skips_what_is_not_downloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_config(CompareConfig, REPO / "configs/finetune/compare_foundation.yaml")
    names = [s.name for s in cfg.starts]
    assert names == ["random", "imagenet", "ssl", "dinov2", "dinov3", "bioclip2"]
    assert [s.name for s in cfg.starts if s.is_generic] == [
        "imagenet",
        "dinov2",
        "dinov3",
        "bioclip2",
    ]
    monkeypatch.chdir(tmp_path)  # none of the weights paths exists here
    reasons = {s.name: compare.missing_weights_reason(s) for s in cfg.starts}
    assert reasons["random"] is None
    assert all(r.startswith("skipped: no weights") for n, r in reasons.items() if n != "random")
