"""`ssl-benthic embed`: features equal a reference forward of the imported model, point patches
follow the reflect rule, an interrupted run resumes to the same bytes, --out is never clobbered."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from fixtures.pretrain import SUBSTRATES, make_shards
from PIL import Image
from safetensors.torch import save_file

from ssl_benthic.cli import main
from ssl_benthic.core.errors import UserError
from ssl_benthic.core.paths import sha256_file
from ssl_benthic.embed.chunks import PARTIAL
from ssl_benthic.embed.inputs import ShardSource
from ssl_benthic.embed.knn import knn_table, read_index_labels
from ssl_benthic.embed.run import embed
from ssl_benthic.embed.start import load_start
from ssl_benthic.weights.import_weights import import_weights

ATOL = 1e-5
VIT = "vit_tiny_patch16_224"
KWARGS = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}


@pytest.fixture(scope="module")
def vit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """(import folder, the model it came from): a random tiny ViT imported as a user would."""
    tmp = tmp_path_factory.mktemp("vit")
    torch.manual_seed(0)
    model = timm.create_model(VIT, pretrained=False, num_classes=0, **KWARGS).eval()
    save_file(model.state_dict(), str(tmp / "tiny.safetensors"))
    import_weights(
        tmp / "tiny.safetensors", tmp / "import", timm_name=VIT, model_kwargs={"num_heads": 2}
    )
    return tmp / "import", model


def _normalised(pixels: np.ndarray) -> torch.Tensor:
    """(1, 3, H, W) of an H x W x 3 uint8 array, (x / 255 - mean) / std with ImageNet's statistics
    (what the import records for a timm file)."""
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    x = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
    return ((x - mean) / std)[None]


@torch.no_grad()
def _reference(model: torch.nn.Module, pixels: np.ndarray, pool: str) -> np.ndarray:
    """The feature by its definition: tokens after the final norm, class token and/or patch mean."""
    tokens = model.forward_features(_normalised(pixels))[0]
    cls, mean = tokens[0], tokens[model.num_prefix_tokens :].mean(0)
    return {"cls": cls, "mean": mean, "cls+mean": torch.cat([cls, mean])}[pool].numpy()


def _images(folder: Path, n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    arrays = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(n)]
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(
            folder / f"img{i}.png"
        )  # lossless: the reference sees the same pixels
    return arrays


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("pool", ["cls", "cls+mean"])
def test_features_equal_the_models_forward(vit, tmp_path: Path, pool: str) -> None:
    folder, model = vit
    arrays = _images(tmp_path / "photos", 5)
    (tmp_path / "photos" / "broken.png").write_bytes(b"not an image")
    (tmp_path / "photos" / ".hidden.png").write_bytes(b"never read")
    out = tmp_path / "emb"
    args = ["embed", "--weights", str(folder), "--images", str(tmp_path / "photos")]
    assert main([*args, "--out", str(out), "--pool", pool, "--batch-size", "2"]) == 0
    feats = np.load(out / "features.npy")
    assert feats.dtype == np.float32 and feats.shape == (5, 64 if pool == "cls+mean" else 32)
    expected = np.stack([_reference(model, a, pool) for a in arrays])
    np.testing.assert_allclose(feats, expected, rtol=0, atol=ATOL)
    rows = _rows(out / "index.csv")
    assert [r["key"] for r in rows] == [f"img{i}.png" for i in range(5)]
    assert list(rows[0]) == ["key", "image", "row", "column"]  # no labels: no label columns
    meta = json.loads((out / "embed.json").read_text())
    assert meta["pool"] == pool and meta["img_size"] == 32 and meta["count"] == 5
    assert meta["start"]["weights"]["sha256"] == sha256_file(folder / "backbone.safetensors")
    assert [(s["key"], s["reason"][:17]) for s in meta["skipped"]] == [
        ("broken.png", "cannot read image")
    ]
    assert meta["features_sha256"] == sha256_file(out / "features.npy")
    assert not (out / PARTIAL).exists()


def test_a_timm_name_with_a_weights_file_is_a_start(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=0).eval()
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    arrays = _images(tmp_path / "photos", 3)
    out = tmp_path / "emb"
    args = [
        "embed",
        "--weights",
        "resnet10t",
        "--weights-file",
        str(tmp_path / "model.safetensors"),
    ]
    assert (
        main([*args, "--images", str(tmp_path / "photos"), "--img-size", "32", "--out", str(out)])
        == 0
    )
    with torch.no_grad():
        expected = torch.cat([model(_normalised(a)) for a in arrays]).numpy()
    np.testing.assert_allclose(np.load(out / "features.npy"), expected, rtol=0, atol=ATOL)
    meta = json.loads((out / "embed.json").read_text())
    assert meta["start"]["timm_name"] == "resnet10t" and meta["pool"] == "avg (CNN)"
    assert meta["start"]["weights"]["sha256"] == sha256_file(tmp_path / "model.safetensors")
    assert (
        main(
            [
                "embed",
                "--weights",
                "resnet10t",
                "--images",
                str(tmp_path / "photos"),
                "--out",
                str(tmp_path / "other"),
            ]
        )
        == 2
    )  # a name without a file: refused


class Stop(Exception):
    pass


def test_an_interrupted_run_resumes_to_the_same_files(vit, tmp_path: Path) -> None:
    folder, _ = vit
    shards = make_shards(tmp_path / "shards", n=11, per_shard=4, labelled=True)
    start = load_start(str(folder))
    options = dict(batch_size=2, chunk_batches=2, dtype="float16")
    embed(ShardSource(shards), start, tmp_path / "whole", **options)

    def stop_after_first(n: int) -> None:
        if n == 1:
            raise Stop

    with pytest.raises(Stop):
        embed(ShardSource(shards), start, tmp_path / "cut", on_chunk=stop_after_first, **options)
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == [PARTIAL]
    seen: list[int] = []
    embed(ShardSource(shards), start, tmp_path / "cut", on_chunk=seen.append, **options)
    assert seen == [2]  # 11 views in chunks of 4: chunks 0 and 1 were kept, only 2 was computed
    for name in ("features.npy", "index.csv", "embed.json"):
        assert (tmp_path / "cut" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    rows = _rows(tmp_path / "whole" / "index.csv")
    assert len(rows) == 11 and rows[1]["labels.substrate"] == SUBSTRATES[1]
    assert np.load(tmp_path / "whole" / "features.npy").dtype == np.float16


def test_out_is_never_clobbered_without_overwrite(vit, tmp_path: Path) -> None:
    folder, _ = vit
    _images(tmp_path / "photos", 2)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    args = [
        "embed",
        "--weights",
        str(folder),
        "--images",
        str(tmp_path / "photos"),
        "--out",
        str(out),
    ]
    assert main(args) == 2
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert main([*args, "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "keep me" and (out / "features.npy").is_file()
    before = (out / "embed.json").read_bytes()
    with pytest.raises(UserError, match="--overwrite"):
        embed(ShardSource(make_shards(tmp_path / "s", n=2)), load_start(str(folder)), out)
    assert (out / "embed.json").read_bytes() == before


def test_coralnet_points_are_the_reflect_padded_patches(vit, tmp_path: Path) -> None:
    folder, model = vit
    rng = np.random.default_rng(3)
    photo = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    (tmp_path / "photos").mkdir()
    Image.fromarray(photo).save(tmp_path / "photos" / "a.png")
    lines = [
        "Name,Row,Column,Label",
        "a.png,20,25,SAND",
        "a.png,2,47,ROCK",  # near the corner: reflect-padded
        "a.png,45,5,ROCK",  # outside the 50 x 40 photo
        "gone.png,3,3,SAND",  # no such photograph
    ]
    (tmp_path / "points.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "emb"
    args = ["embed", "--weights", str(folder), "--coralnet", str(tmp_path / "points.csv")]
    assert (
        main([*args, "--images-root", str(tmp_path / "photos"), "--patch", "32", "--out", str(out)])
        == 0
    )
    padded = np.pad(photo, ((32, 32), (32, 32), (0, 0)), mode="reflect")
    patches = [
        padded[r - 16 + 32 : r + 16 + 32, c - 16 + 32 : c + 16 + 32] for r, c in ((2, 47), (20, 25))
    ]
    expected = np.stack([_reference(model, p, "cls") for p in patches])
    np.testing.assert_allclose(np.load(out / "features.npy"), expected, rtol=0, atol=ATOL)
    rows = _rows(out / "index.csv")
    assert [(r["image"], r["row"], r["column"], r["labels.label"]) for r in rows] == [
        ("a.png", "2", "47", "ROCK"),
        ("a.png", "20", "25", "SAND"),
    ]
    skipped = json.loads((out / "embed.json").read_text())["skipped"]
    assert [(s["image"], s["reason"].split(" ")[0]) for s in skipped] == [
        ("a.png", "point"),
        ("gone.png", "cannot"),
    ]


def test_knn_flag_scores_against_the_bank_shards(vit, tmp_path: Path, capsys) -> None:
    folder, _ = vit
    train = make_shards(tmp_path / "train", n=8, labelled=True)
    val = make_shards(tmp_path / "val", n=6, seed=1, labelled=True)
    base = ["embed", "--weights", str(folder)]
    assert main([*base, "--shards", str(train), "--out", str(tmp_path / "bank")]) == 0
    assert (
        main([*base, "--shards", str(val), "--out", str(tmp_path / "q"), "--knn", str(train)]) == 0
    )
    assert "substrate" in capsys.readouterr().out
    got = json.loads((tmp_path / "q" / "knn.json").read_text())
    expected = knn_table(
        np.load(tmp_path / "bank" / "features.npy"),
        read_index_labels(tmp_path / "bank" / "index.csv"),
        np.load(tmp_path / "q" / "features.npy"),
        read_index_labels(tmp_path / "q" / "index.csv"),
        k=20,
        temperature=0.1,
    )
    assert (got["k"], got["temperature"], got["rows"]) == (20, 0.1, expected)
    assert [(r["head"], r["depth"], r["bank"], r["query"]) for r in got["rows"]] == [
        ("substrate", 2, 8, 6),  # depth 1 is `Substrate` alone: one class, not scored
        ("substrate", 3, 8, 6),
    ]
    _images(tmp_path / "photos", 1)
    args = [*base, "--images", str(tmp_path / "photos"), "--out", str(tmp_path / "x")]
    assert main([*args, "--knn", str(train)]) == 2  # nothing to score: refused before any work
    assert not (tmp_path / "x").exists()


def test_a_random_start_is_seeded(tmp_path: Path) -> None:
    torch.manual_seed(5)
    reference = timm.create_model("resnet10t", pretrained=False, num_classes=0).eval()
    start = load_start("random", model="resnet10t", seed=5, img_size=32)
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            start.backbone.state_dict().values(), reference.state_dict().values(), strict=True
        )
    )
    other = load_start("random", model="resnet10t", seed=6).backbone.state_dict()
    assert not torch.equal(other["conv1.0.weight"], reference.state_dict()["conv1.0.weight"])
    assert start.record["weights"] == {"source": "random", "file": None, "sha256": None, "seed": 5}
    with pytest.raises(UserError, match="--model"):
        load_start("random")
