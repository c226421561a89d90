"""Point annotation exports (CoralNet, CoralNet-Toolbox, SQUIDLE+) as patch shards: the patch rule,
labels and label maps, skipped and refused points, determinism. Every image is drawn here."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssl_benthic.cli import main
from ssl_benthic.core.errors import DataError
from ssl_benthic.data.points.patches import cut_patch, reflect_index
from ssl_benthic.data.shards.reader import iter_samples, load_manifest

RNG = np.random.default_rng(7)
A = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)  # a.png: 20 rows, 30 columns
B = RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8)  # b.png
CORALS = "[BIOTA] > Biota > Cnidaria > Corals"
ALGAE = "[BIOTA] > Biota > Macroalgae"
LABEL_MAP = f"code,path,head\nPOR,{CORALS},\nALG,{ALGAE},\nSAND,Sand,substrate\n"
CORALNET = (  # line numbers as the file shows them: the header is line 1
    "Name,Row,Column,Label,Patch Size,Comments\n"
    "a.png,10,15,POR,5,mid\n"  # 2: odd per-point patch
    "a.png,0,0,POR,,corner\n"  # 3: top-left corner
    "a.png,19,29,SAND,,\n"  # 4: bottom-right corner
    "a.png,10,15,ALG,,second label\n"  # 5: the point of line 2 again
    "a.png,0,14,SAND,,\n"  # 6: top border
    "b.png,8,0,ALG,40,\n"  # 7: left border, a patch larger than the image
    "gone.png,5,5,POR,,\n"  # 8: missing image
    "b.png,15,7,POR,,\n"  # 9: bottom border
)


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def _by_hand(image: np.ndarray, row: int, col: int, size: int) -> np.ndarray:
    """np.pad(mode="reflect") by the patch size on every side, then the slice at top, left."""
    padded = np.pad(image, ((size, size), (size, size), (0, 0)), mode="reflect")
    top, left = row - size // 2 + size, col - size // 2 + size
    return padded[top : top + size, left : left + size]


def _case(tmp_path: Path, csv_text: str = CORALNET, name: str = "list.csv") -> Path:
    (tmp_path / "a.png").write_bytes(_png(A))
    (tmp_path / "b.png").write_bytes(_png(B))
    (tmp_path / "map.csv").write_text(LABEL_MAP, encoding="utf-8")
    (tmp_path / name).write_text(csv_text, encoding="utf-8")
    return tmp_path / name


def _read(out: Path) -> dict[str, tuple[np.ndarray, dict]]:
    return {k: (np.asarray(im), m) for k, im, m in iter_samples(out)}


def _shard(args: list[str]) -> int:
    return main(["make-shards", *args])


# --- the patch rule ---------------------------------------------------------------------------


def test_cut_patch_is_np_pad_reflect_then_slice_everywhere() -> None:
    for size in (1, 2, 5, 8, 33, 70):  # 33 and 70 reach past the 20 x 30 image more than once
        for row, col in [(0, 0), (19, 29), (0, 29), (19, 0), (10, 15), (3, 27)]:
            patch = cut_patch(A, row, col, size)
            assert patch.shape == (size, size, 3)
            assert np.array_equal(patch, _by_hand(A, row, col, size)), (size, row, col)
    one_row = A[:1]
    assert np.array_equal(cut_patch(one_row, 0, 4, 3), np.repeat(one_row[:, 3:6], 3, axis=0))
    assert reflect_index(np.arange(-3, 8), 4).tolist() == [3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1]


# --- CoralNet ---------------------------------------------------------------------------------

KEYS = [  # sorted: image, then row, then column; 00000006 is gone.png's point
    "00000000_a_r0_c0",
    "00000001_a_r0_c14",
    "00000002_a_r10_c15",
    "00000003_a_r19_c29",
    "00000004_b_r8_c0",
    "00000005_b_r15_c7",
]


def test_coralnet_points_become_hand_computed_patches(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    csv_path, out = _case(tmp_path), tmp_path / "out"
    argv = ["--coralnet", str(csv_path), "--label-map", str(tmp_path / "map.csv")]
    assert _shard([*argv, "--out", str(out), "--patch", "8", "--patch-format", "png"]) == 0
    assert "row 8: gone.png: missing file" in capsys.readouterr().out
    read = _read(out)
    assert sorted(read) == KEYS
    for pixels, meta in read.values():
        source = A if meta["image"] == "a.png" else B
        assert np.array_equal(pixels, _by_hand(source, meta["row"], meta["column"], meta["patch"]))
    assert [read[k][1]["patch"] for k in KEYS] == [8, 8, 5, 8, 40, 8]
    mid = read["00000002_a_r10_c15"][1]
    assert mid["labels"] == {"biota": [CORALS, ALGAE]} and mid["label_codes"] == ["POR", "ALG"]
    assert mid["Comments"] == "mid" and mid["image"] == "a.png"
    assert (mid["row"], mid["column"]) == (10, 15)
    assert read["00000003_a_r19_c29"][1]["labels"] == {"substrate": ["Sand"]}
    assert not {"Name", "Row", "Column", "Label", "Patch Size"} & set(mid)
    manifest = load_manifest(out)
    assert manifest["num_samples"] == 6
    assert manifest["source"]["skipped"] == [
        {"row": 8, "file": "gone.png", "reason": "missing file"}
    ]
    assert manifest["source"]["label_map"]["SAND"] == {"head": "substrate", "path": "Sand"}
    assert manifest["label_schema"]["heads"] == {"biota": [CORALS, ALGAE], "substrate": ["Sand"]}
    with tarfile.open(out / manifest["shards"][0]["file"]) as tar:
        assert {m.name.rsplit(".", 1)[1] for m in tar} == {"png", "json"}


def test_unmapped_codes_fail_up_front_with_counts_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    csv_path = _case(tmp_path, CORALNET + "b.png,1,1,XX,,\nb.png,2,2,XX,,\n")
    (tmp_path / "map.csv").write_text(f"code,path\nPOR,{CORALS}\n", encoding="utf-8")
    argv = ["--coralnet", str(csv_path), "--label-map", str(tmp_path / "map.csv")]
    assert _shard([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert (
        f"error: {csv_path}: 3 label codes are not in the label map {tmp_path / 'map.csv'}: "
        "'ALG' (2), 'SAND' (2), 'XX' (2); add them as code,path rows; nothing written"
    ) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "list.csv", "map.csv"]


def test_coralnet_without_a_map_files_codes_under_label(tmp_path: Path) -> None:
    csv_path, out = _case(tmp_path), tmp_path / "out"
    assert _shard(["--coralnet", str(csv_path), "--out", str(out), "--patch", "4"]) == 0
    read = _read(out)
    assert read["00000002_a_r10_c15"][1]["labels"] == {"label": ["POR", "ALG"]}
    assert load_manifest(out)["source"]["label_map"] is None


def test_points_of_one_head_are_known_negatives_of_the_others(tmp_path: Path) -> None:
    """One label per point: a biota point is a negative of substrate and the reverse; a point with
    codes of both heads (line 2 and 5) is a negative of neither."""
    csv_path, out = _case(tmp_path), tmp_path / "out"
    argv = ["--coralnet", str(csv_path), "--label-map", str(tmp_path / "map.csv")]
    assert _shard([*argv, "--out", str(out), "--patch", "4"]) == 0
    negatives = {k: m.get("negative_heads") for k, (_, m) in _read(out).items()}
    assert negatives == {
        "00000000_a_r0_c0": ["substrate"],  # POR
        "00000001_a_r0_c14": ["biota"],  # SAND
        "00000002_a_r10_c15": ["substrate"],  # POR and ALG: both biota
        "00000003_a_r19_c29": ["biota"],
        "00000004_b_r8_c0": ["substrate"],
        "00000005_b_r15_c7": ["substrate"],
    }


def test_an_overlap_column_leaves_the_overlapping_heads_unknown(tmp_path: Path) -> None:
    csv_path, out = _case(tmp_path), tmp_path / "out"
    (tmp_path / "map.csv").write_text(
        f"code,path,head,overlap\nPOR,{CORALS},,substrate\nALG,{ALGAE},,\nSAND,Sand,substrate,*\n",
        encoding="utf-8",
    )
    argv = ["--coralnet", str(csv_path), "--label-map", str(tmp_path / "map.csv")]
    assert _shard([*argv, "--out", str(out), "--patch", "4"]) == 0
    negatives = {k: m.get("negative_heads") for k, (_, m) in _read(out).items()}
    assert negatives["00000000_a_r0_c0"] is None  # POR overlaps substrate
    assert negatives["00000001_a_r0_c14"] is None  # SAND overlaps every head
    assert negatives["00000004_b_r8_c0"] == ["substrate"]  # ALG overlaps nothing
    assert negatives["00000002_a_r10_c15"] is None  # POR and ALG: POR's overlap counts


def test_an_overlap_naming_an_unknown_head_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    csv_path = _case(tmp_path)
    (tmp_path / "map.csv").write_text(
        f"code,path,overlap\nPOR,{CORALS},substrat\nSAND,[SUBSTRATE] > Sand,\n", encoding="utf-8"
    )
    argv = ["--coralnet", str(csv_path), "--label-map", str(tmp_path / "map.csv")]
    assert _shard([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert (
        "code 'POR': overlap names head(s) ['substrat']" in err and "heads: biota, substrate" in err
    )


TOOLBOX_HEADER = (
    "Name,Path,Row,Column,Patch Size,Annotation Type,Label,Long Label,Verified,"
    + ",".join(f"Machine confidence {i}" for i in range(1, 6))
    + ","
    + ",".join(f"Machine suggestion {i}" for i in range(1, 6))
)


def test_coralnet_toolbox_export_keeps_its_extra_columns(tmp_path: Path) -> None:
    row = "a.png,/home/me/a.png,4,6,3,PatchAnnotation,POR,Porites,True,0.9,0.05,0.03,0.01,0.01"
    row += ",POR,ALG,SAND,X1,X2"
    csv_path, out = _case(tmp_path, f"{TOOLBOX_HEADER}\n{row}\n", "toolbox.csv"), tmp_path / "out"
    assert _shard(["--coralnet", str(csv_path), "--out", str(out), "--patch-format", "png"]) == 0
    ((pixels, meta),) = _read(out).values()
    assert np.array_equal(pixels, _by_hand(A, 4, 6, 3))
    expected = {
        "Path": "/home/me/a.png",
        "Annotation Type": "PatchAnnotation",
        "Long Label": "Porites",
        "Verified": "True",
        **{f"Machine confidence {i}": v for i, v in enumerate(row.split(",")[9:14], 1)},
        **{
            f"Machine suggestion {i}": v
            for i, v in enumerate(["POR", "ALG", "SAND", "X1", "X2"], 1)
        },
        "image": "a.png",
        "row": 4,
        "column": 6,
        "patch": 3,
        "labels": {"label": ["POR"]},
        "label_codes": ["POR"],
    }
    assert {k: v for k, v in meta.items() if not k.startswith("__")} == expected


def test_a_point_outside_its_image_names_the_row(tmp_path: Path) -> None:
    csv_path = _case(tmp_path, "Name,Row,Column,Label\na.png,3,3,POR\na.png,20,5,POR\n")
    from ssl_benthic.data.sources.point_shards import make_shards_from_coralnet

    with pytest.raises(DataError) as exc:
        make_shards_from_coralnet(csv_path, tmp_path, tmp_path / "out")
    assert str(exc.value) == (
        f"{csv_path} row 3: point (Row 20, Column 5) is outside a.png "
        "(30 x 20 px: Row 0..19, Column 0..29)"
    )
    assert not (tmp_path / "out").exists()


def test_two_runs_give_byte_identical_shards(tmp_path: Path) -> None:
    csv_path = _case(tmp_path)
    for out in ("one", "two"):
        argv = ["--coralnet", str(csv_path), "--out", str(tmp_path / out), "--patch", "6"]
        assert _shard([*argv, "--resize", "4", "--seed", "3", "--max-per-shard", "4"]) == 0
    one = {p.name: p.read_bytes() for p in (tmp_path / "one").iterdir()}
    two = {p.name: p.read_bytes() for p in (tmp_path / "two").iterdir()}
    assert sorted(one) == ["manifest.json", "shard-000000.tar", "shard-000001.tar"] and one == two
    resized = {k: p.shape for k, (p, _) in _read(tmp_path / "one").items()}
    assert set(resized.values()) == {(4, 4, 3)} and sorted(resized) == KEYS


# --- SQUIDLE+ ---------------------------------------------------------------------------------

SQUIDLE_HEADER = (
    "label.id,label.name,label.lineage_names,label.translated.lineage_names,"
    "point.x,point.y,point.media.key,point.pose.dep"
)
SQUIDLE = (
    f"{SQUIDLE_HEADER}\n"
    "1,Massive,Sponges > Massive,Biota > Sponges > Massive forms,0.5,0.125,a.png,30.5\n"  # 2
    "2,Rock,Substrate > Consolidated,,0.5,0.125,a.png,30.5\n"  # 3: same point, no translation
    "3,Sand,Substrate > Sand,,1.0,1.0,a.png,30.5\n"  # 4: the far corner, clamped
    "4,Sand,Substrate > Sand,,,,b.png,31\n"  # 5: a whole-frame label
)


def test_squidle_points_lineages_and_a_whole_frame(tmp_path: Path) -> None:
    csv_path, out = _case(tmp_path, SQUIDLE, "dataframe.csv"), tmp_path / "out"
    assert _shard(["--squidle", str(csv_path), "--out", str(out), "--patch", "4"]) == 0
    read = _read(out)
    assert sorted(read) == ["00000000_a_r3_c15", "00000001_a_r19_c29", "00000002_b"]
    pixels, meta = read["00000000_a_r3_c15"]  # y 0.125 x 20 rows = 2.5 -> 3 (half up)
    assert meta["labels"] == {
        "biota": ["[BIOTA] > Biota > Sponges > Massive forms"],
        "substrate": ["[SUBSTRATE] > Substrate > Consolidated"],
    }
    assert (meta["row"], meta["column"], meta["patch"], meta["image"]) == (3, 15, 4, "a.png")
    assert meta["label.name"] == "Massive" and meta["point.pose.dep"] == "30.5"
    assert "point.x" not in meta and "label.lineage_names" not in meta
    assert (
        pixels.shape == (4, 4, 3) and _member(out, "00000000_a_r3_c15.jpg")[:3] == b"\xff\xd8\xff"
    )
    frame, frame_meta = read["00000002_b"]
    assert np.array_equal(frame, B) and "row" not in frame_meta
    assert frame_meta["labels"] == {"substrate": ["[SUBSTRATE] > Substrate > Sand"]}
    assert _member(out, "00000002_b.png") == (tmp_path / "b.png").read_bytes()  # kept as it is


def test_squidle_without_translation_and_one_head(tmp_path: Path) -> None:
    text = "label.lineage_names,point.x,point.y,point.media.key\nBiota/Sponges,0,0,b.png\n"
    csv_path, out = _case(tmp_path, text, "dataframe.csv"), tmp_path / "out"
    argv = ["--squidle", str(csv_path), "--out", str(out), "--lineage-sep", "/"]
    assert _shard([*argv, "--head", "catami", "--patch", "3", "--patch-format", "png"]) == 0
    ((pixels, meta),) = _read(out).values()
    assert meta["labels"] == {"catami": ["[BIOTA] > Biota > Sponges"]}
    assert np.array_equal(pixels, _by_hand(B, 0, 0, 3))


def test_squidle_fraction_outside_the_image_names_the_row(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    csv_path = _case(tmp_path, SQUIDLE + "5,Sand,Substrate > Sand,,1.2,0.5,b.png,31\n", "d.csv")
    assert _shard(["--squidle", str(csv_path), "--out", str(tmp_path / "out")]) == 2
    assert (
        f"error: {csv_path} row 6: point.x '1.2' is outside the image (a fraction in [0, 1])"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "out").exists()


def _member(out: Path, name: str) -> bytes:
    for entry in load_manifest(out)["shards"]:
        with tarfile.open(out / entry["file"]) as tar:
            if name in tar.getnames():
                return tar.extractfile(name).read()
    raise KeyError(name)


def test_points_are_placed_in_the_upright_image(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 20 x 30, shown turned a quarter clockwise: 30 rows, 20 columns
    Image.fromarray(A).save(tmp_path / "turned.png", exif=exif)
    (tmp_path / "p.csv").write_text("Name,Row,Column,Label\nturned.png,29,0,X\n", encoding="utf-8")
    out = tmp_path / "out"
    argv = ["--coralnet", str(tmp_path / "p.csv"), "--out", str(out), "--patch", "5"]
    assert _shard([*argv, "--patch-format", "png"]) == 0
    ((pixels, meta),) = _read(out).values()
    assert np.array_equal(pixels, _by_hand(np.rot90(A, -1), 29, 0, 5))
