"""`predict` on point exports: the CoralNet round trip (export -> shards -> model -> export with
machine suggestions), patches cut exactly as make-shards cuts them, SQUIDLE+ points and frames."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from fixtures.finetune import make_cfg
from PIL import Image

from hml_finetune.cli import main as hml_main
from hml_finetune.finetune.train import run_finetune
from ssl_benthic.cli import main as ssl_main

MAP = {
    "SPON": "[BIOTA] > Biota > Sponges",
    "CNID": "[BIOTA] > Biota > Cnidaria",
    "ACRO": "[BIOTA] > Biota > Cnidaria > Corals",
    "SAND": "[SUBSTRATE] > Substrate > Unconsolidated (soft)",
}


@pytest.fixture(scope="module")
def survey(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """12 photographs of 48 x 64 px, 4 points each (corners and borders too), a label map, the
    CoralNet export, its grouped patch shards and a tiny model trained on them."""
    root = tmp_path_factory.mktemp("coralnet")
    rng = np.random.default_rng(0)
    (root / "photos").mkdir()
    rows, codes = [], list(MAP)
    for i in range(12):
        name = f"img{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(
            root / "photos" / name
        )
        for j, (r, c) in enumerate(((0, 0), (47, 63), (24, 5), (10, 40))):
            rows.append({"Name": name, "Row": r, "Column": c, "Label": codes[(i + j) % 4]})
    export = root / "annotations.csv"
    with export.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["Name", "Row", "Column", "Label"])
        writer.writeheader()
        writer.writerows(rows)
    label_map = root / "map.csv"
    label_map.write_text("code,path\n" + "".join(f"{c},{p}\n" for c, p in MAP.items()))
    shards = root / "shards"
    args = ["make-shards", "--coralnet", str(export), "--images-root", str(root / "photos")]
    args += ["--label-map", str(label_map), "--patch", "16", "--patch-format", "png"]
    args += ["--split", "train=0.5,val=0.25,test=0.25", "--group-by", "image", "--out", str(shards)]
    assert ssl_main(args) == 0
    run_finetune(make_cfg(shards, root / "run", "data.img_size=16", "threshold=0.5"))
    return {"root": root, "export": export, "shards": shards, "ckpt": root / "run" / "model.ckpt"}


def _predict(s: dict[str, Path], out: Path, *args: str) -> int:
    base = ["predict", "--checkpoint", str(s["ckpt"]), "--out", str(out), "--num-workers", "0"]
    return hml_main([*base, *args])


def test_coralnet_round_trip_fills_machine_suggestions_from_the_label_map(survey, tmp_path):
    out = tmp_path / "suggested.csv"
    args = ["--coralnet", str(survey["export"]), "--images-root", str(survey["root"] / "photos")]
    assert (
        _predict(survey, out, *args, "--patch", "16", "--format", "coralnet", "--top-k", "3") == 0
    )
    original = list(csv.DictReader(survey["export"].open()))
    written = list(csv.DictReader(out.open()))
    assert [(r["Name"], r["Row"], r["Column"], r["Label"]) for r in written] == [
        (r["Name"], r["Row"], r["Column"], r["Label"]) for r in original
    ]
    for r in written:
        codes = [r[f"Machine suggestion {i}"] for i in (1, 2, 3)]
        confidence = [int(r[f"Machine confidence {i}"]) for i in (1, 2, 3)]
        assert set(codes) <= set(MAP) and len(set(codes)) == 3
        assert confidence == sorted(confidence, reverse=True) and 0 <= confidence[-1] <= 100
        assert r["Machine label rule"] == "expected-hops"  # the run's label rule is recorded


def test_points_are_cut_as_make_shards_cut_them(survey, tmp_path):
    """The same probabilities from the export's points as from the shards' stored patches."""
    from_points, from_shards = tmp_path / "points.jsonl", tmp_path / "shards.jsonl"
    args = ["--coralnet", str(survey["export"]), "--images-root", str(survey["root"] / "photos")]
    assert _predict(survey, from_points, *args, "--patch", "16", "--format", "jsonl") == 0
    assert (
        _predict(
            survey, from_shards, "--shards", str(survey["shards"] / "test"), "--format", "jsonl"
        )
        == 0
    )
    by_place = {
        (r["image"], r["row"], r["column"]): r
        for r in map(json.loads, from_points.read_text().splitlines())
    }
    shard_records = [json.loads(line) for line in from_shards.read_text().splitlines()]
    assert len(shard_records) == 12  # the test split: 3 photographs x 4 points
    for r in shard_records:
        twin = by_place[(r["image"], r["row"], r["column"])]
        assert set(r["heads"]) == set(twin["heads"]) == {"biota", "substrate"}  # the map's roots
        for head, pred in r["heads"].items():
            assert pred["probabilities"].keys() == twin["heads"][head]["probabilities"].keys()
            assert pred["probabilities"], head
            for node, p in pred["probabilities"].items():
                assert twin["heads"][head]["probabilities"][node] == pytest.approx(p, abs=1e-6)


def test_squidle_points_and_whole_frames(survey, tmp_path):
    export = tmp_path / "dataframe.csv"
    rows = [
        {
            "point.media.key": "img00.png",
            "point.x": "0.5",
            "point.y": "0.25",
            "label.lineage_names": "Biota > Sponges",
        },
        {
            "point.media.key": "img01.png",
            "point.x": "",
            "point.y": "",
            "label.lineage_names": "Biota",
        },
        {
            "point.media.key": "gone.png",
            "point.x": "0.1",
            "point.y": "0.1",
            "label.lineage_names": "Biota",
        },
    ]
    with export.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "squidle.csv"
    args = [
        "--squidle",
        str(export),
        "--images-root",
        str(survey["root"] / "photos"),
        "--patch",
        "16",
    ]
    assert _predict(survey, out, *args) == 1  # gone.png: an error row, the others written
    written = list(csv.DictReader(out.open()))
    point = [r for r in written if r["image"] == "img00.png"]
    assert {(r["row"], r["column"]) for r in point} == {("12", "32")}  # floor(0.25*48+.5), 64/2
    frame = [r for r in written if r["image"] == "img01.png"]
    assert frame and all(r["row"] == "" and r["error"] == "" for r in frame)
    gone = [r for r in written if r["image"] == "gone.png"]
    assert len(gone) == 1 and gone[0]["error"]


def test_make_survey_draws_a_reproducible_coralnet_survey(tmp_path):
    from ssl_benthic.data.sample.make_survey import SURVEY_CODES, make_survey

    counts = make_survey(tmp_path / "a", n_images=4, size=32, points_per_image=3)
    make_survey(tmp_path / "b", n_images=4, size=32, points_per_image=3)
    assert counts["images"] == 4 and counts["points"] == 12
    rows = list(csv.DictReader((tmp_path / "a" / "annotations.csv").open()))
    assert [(r["Row"], r["Column"]) for r in rows[:2]] == [
        ("0", "0"),
        ("31", "16"),
    ]  # corner, border
    assert {r["Label"] for r in rows} <= set(SURVEY_CODES)
    assert (
        len({r["Label"] for r in rows if r["Name"] == "IMG_0000.jpg"}) == 1
    )  # one substrate a photo
    mapped = {r["code"] for r in csv.DictReader((tmp_path / "a" / "label_map.csv").open())}
    assert mapped == set(SURVEY_CODES)
    for name in ("annotations.csv", "photos/IMG_0003.jpg"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def _hand_cover(rows: list[dict], group_of: dict[str, str]) -> dict[tuple, int]:
    """Points per (group, image, head, depth, node) counted from predict's own CSV labels: the
    label's path cut to depth d (root + d parts), or unresolved when the label is shallower; group
    rows (image '') pool their images."""
    out: dict[tuple, int] = {}
    for r in rows:
        parts = r["label"].split(" > ")
        for d in (1, 2):
            node = " > ".join(parts[: d + 1]) if int(r["depth"]) >= d else "unresolved"
            for image in (r["image"], ""):
                key = (group_of[r["image"]], image, r["head"], d, node)
                out[key] = out.get(key, 0) + 1
    return out


def test_cover_matches_counts_by_hand_per_image_and_site(survey, tmp_path):
    """An export with a Site column: --cover per image and per site at depths 1 and 2 equals the
    counts of the labels written in predict's CSV; covers are shares of the image's points."""
    rows = list(csv.DictReader(survey["export"].open()))
    group_of = {r["Name"]: ("north" if r["Name"] < "img06" else "south") for r in rows}
    export = tmp_path / "sites.csv"
    with export.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*rows[0], "Site"])
        writer.writeheader()
        writer.writerows({**r, "Site": group_of[r["Name"]]} for r in rows)
    out, cover = tmp_path / "labels.csv", tmp_path / "cover.csv"
    args = ["--coralnet", str(export), "--images-root", str(survey["root"] / "photos")]
    args += ["--patch", "16", "--cover", str(cover), "--cover-by", "Site"]
    assert _predict(survey, out, *args, "--cover-depth", "1", "--cover-depth", "2") == 0
    labels = list(csv.DictReader(out.open()))
    got = list(csv.DictReader(cover.open()))
    want = _hand_cover(labels, group_of)
    assert {
        (r["group"], r["image"], r["head"], int(r["depth"]), r["node"]): int(r["points"])
        for r in got
    } == want
    points = {(r["group"], r["image"], r["head"]): 0 for r in got}
    for r in labels:
        for image in (r["image"], ""):
            points[(group_of[r["image"]], image, r["head"])] += 1
    for r in got:
        total = points[(r["group"], r["image"], r["head"])]
        assert float(r["cover"]) == pytest.approx(int(r["points"]) / total, abs=1e-6)


def _write_rows(path: Path, rows: list[dict], encoding: str = "utf-8") -> Path:
    with path.open("w", newline="", encoding=encoding) as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _suggested(out: Path, encoding: str = "utf-8") -> list[dict]:
    return list(csv.DictReader(out.open(encoding=encoding)))


def test_fractional_rows_and_columns_get_their_suggestions(survey, tmp_path):
    """#22.1: Row 46.6 is read as 47 and was looked up as int(46.6) = 46: no suggestions."""
    rows = list(csv.DictReader(survey["export"].open()))
    for r in rows:
        r["Row"] = f"{max(int(r['Row']) - 0.4, 0.6):.1f}"  # 0 -> 0.6 (1), 47 -> 46.6 (47)
    export = _write_rows(tmp_path / "toolbox.csv", rows)
    out = tmp_path / "suggested.csv"
    args = ["--coralnet", str(export), "--images-root", str(survey["root"] / "photos")]
    assert (
        _predict(survey, out, *args, "--patch", "16", "--format", "coralnet", "--top-k", "2") == 0
    )
    written = _suggested(out)
    assert [r["Row"] for r in written] == [r["Row"] for r in rows]  # the export, untouched
    assert all(r["Machine suggestion 1"] and r["Machine suggestion 2"] for r in written)
    assert all(r["Machine error"] == "" for r in written)


def test_write_back_honours_image_column_and_encoding_and_gives_failures_a_reason(survey, tmp_path):
    """#22.2 and #22.8: `--image-column Image` ended in KeyError 'Name' with nothing written;
    predict had no --encoding; a failed point had empty cells and no reason."""
    rows = [
        {
            "Image": r["Name"],
            "Row": r["Row"],
            "Column": r["Column"],
            "Label": r["Label"],
            "Note": "é",
        }
        for r in csv.DictReader(survey["export"].open())
    ][:8]
    rows.append({"Image": "gone.png", "Row": "3", "Column": "3", "Label": "SPON", "Note": "ü"})
    export = _write_rows(tmp_path / "latin.csv", rows, "latin-1")
    out = tmp_path / "suggested.csv"
    args = ["--coralnet", str(export), "--images-root", str(survey["root"] / "photos")]
    args += ["--image-column", "Image", "--encoding", "latin-1", "--patch", "16"]
    assert _predict(survey, out, *args, "--format", "coralnet", "--top-k", "2") == 1  # gone.png
    written = _suggested(out)
    assert [(r["Image"], r["Note"]) for r in written] == [(r["Image"], r["Note"]) for r in rows]
    *found, gone = written
    assert all(r["Machine suggestion 1"] and not r["Machine error"] for r in found)
    assert gone["Machine suggestion 1"] == "" and "gone.png" in gone["Machine error"]


def test_a_label_map_path_missing_from_its_scheme_fails_before_anything_is_written(
    survey, tmp_path, capsys
):
    """#22.3: a map code whose path is not in its head's scheme (CATAMI for biota) was never
    suggested, silently."""
    import torch

    ckpt = torch.load(survey["ckpt"], map_location="cpu", weights_only=True)
    ckpt["hml_finetune"]["label_map"]["SPNZ"] = {
        "head": "biota",
        "path": "[BIOTA] > Biota > Spongez",
    }
    torch.save(ckpt, tmp_path / "typo.ckpt")
    out = tmp_path / "suggested.csv"
    args = ["predict", "--checkpoint", str(tmp_path / "typo.ckpt"), "--out", str(out)]
    args += ["--num-workers", "0", "--coralnet", str(survey["export"]), "--format", "coralnet"]
    assert hml_main([*args, "--images-root", str(survey["root"] / "photos")]) == 2
    err = capsys.readouterr().err
    assert "1 label-map codes have a path missing from its head's scheme" in err
    assert "'SPNZ' ('[BIOTA] > Biota > Spongez', nearest '[BIOTA] > Biota > Sponges')" in err
    assert not out.exists() and not list(tmp_path.glob(".suggested*"))


MERMAID_MAP = {  # MERMAID codes (attribute, or attribute / growth form) -> the survey's paths
    "Sponges": MAP["SPON"],
    "Cnidaria": MAP["CNID"],
    "Hard coral / Branching": MAP["ACRO"],
    "Sand": MAP["SAND"],
}


def test_mermaid_round_trip_make_shards_then_predict(survey, tmp_path):
    """MERMAID annotations -> make-shards --mermaid (labels through the map) -> predict --mermaid
    gives every point the probabilities that predict --shards gives its stored patch."""
    codes = dict(zip(MAP, MERMAID_MAP, strict=True))
    rows = []
    for r in csv.DictReader(survey["export"].open()):
        attribute, _, form = codes[r["Label"]].partition(" / ")
        rows.append(
            {"image_id": r["Name"].removesuffix(".png"), "point_id": f"p{len(rows)}"}
            | {"row": r["Row"], "col": r["Column"], "benthic_attribute_name": attribute}
            | {"growth_form_name": form}
        )
    export = _write_rows(tmp_path / "annotations.csv", rows)
    label_map = tmp_path / "mermaid_map.csv"
    label_map.write_text("code,path\n" + "".join(f"{c},{p}\n" for c, p in MERMAID_MAP.items()))
    shards, photos = tmp_path / "shards", str(survey["root"] / "photos")
    args = ["make-shards", "--mermaid", str(export), "--images-root", photos, "--out", str(shards)]
    assert (
        ssl_main([*args, "--label-map", str(label_map), "--patch", "16", "--patch-format", "png"])
        == 0
    )
    from ssl_benthic.data.shards.reader import iter_samples

    by_place = {(r["image_id"] + ".png", int(r["row"]), int(r["col"])): r for r in rows}
    samples = list(iter_samples(shards))
    assert len(samples) == len(rows) == 48
    for _, _, meta in samples:
        code = codes_of(by_place[(meta["image"], meta["row"], meta["column"])])
        head = "substrate" if code == "Sand" else "biota"
        assert meta["labels"] == {head: [MERMAID_MAP[code]]} and meta["label_codes"] == [code]
    from_points, from_shards = tmp_path / "points.jsonl", tmp_path / "shards.jsonl"
    args = ["--mermaid", str(export), "--images-root", photos, "--patch", "16", "--format", "jsonl"]
    assert _predict(survey, from_points, *args) == 0
    assert _predict(survey, from_shards, "--shards", str(shards), "--format", "jsonl") == 0
    twins = {(r["image"], r["row"], r["column"]): r for r in map(json.loads, from_points.open())}
    records = [json.loads(line) for line in from_shards.open()]
    assert len(records) == len(twins) == 48
    for r in records:
        twin = twins[(r["image"], r["row"], r["column"])]
        for head, pred in r["heads"].items():
            for node, p in pred["probabilities"].items():
                assert twin["heads"][head]["probabilities"][node] == pytest.approx(p, abs=1e-6)


def codes_of(row: dict) -> str:
    """A MERMAID row's label code, written by hand: the attribute, ' / ', the growth form."""
    form = row["growth_form_name"]
    return f"{row['benthic_attribute_name']} / {form}" if form else row["benthic_attribute_name"]


def test_patch_defaults_to_the_training_patches_and_warns_when_told_otherwise(survey, tmp_path):
    """#22.9: the model was trained on 16 px patches; predict used to cut 224 px by default."""
    from hml_finetune.finetune.inference import load_finetuned

    assert load_finetuned(survey["ckpt"])[2]["patch"] == {"patch": 16, "resize": 0}
    args = ["--coralnet", str(survey["export"]), "--images-root", str(survey["root"] / "photos")]
    args += ["--format", "jsonl"]
    default, told, other = (tmp_path / f"{n}.jsonl" for n in ("default", "told", "other"))
    assert _predict(survey, default, *args) == 0
    assert _predict(survey, told, *args, "--patch", "16") == 0
    assert default.read_text() == told.read_text()
    with pytest.warns(
        UserWarning, match=r"--patch 24: the model was trained on patches with patch 16"
    ):
        assert _predict(survey, other, *args, "--patch", "24") == 0
    assert other.read_text() != told.read_text()
