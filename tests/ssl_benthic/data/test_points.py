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
    from ssl_benthic.data.sources.point_shards import make_point_shards

    with pytest.raises(DataError) as exc:
        make_point_shards("coralnet", csv_path, tmp_path, tmp_path / "out")
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


# --- MERMAID ----------------------------------------------------------------------------------

MERMAID_HEADER = (
    "id,image_id,point_id,row,col,benthic_attribute_id,benthic_attribute_name,growth_form_id,"
    "growth_form_name,updated_on"
)
MERMAID = (  # images named by id (a -> a.png); rows ordered by row, col as MERMAID writes them
    f"{MERMAID_HEADER}\n"
    "u1,a,p1,0,0,b1,Hard coral,g1,Branching,2025-01-01\n"  # 2: corner, attribute + growth form
    "u2,a,p2,10,15,b2,Macroalgae,,,2025-01-01\n"  # 3: no growth form: the attribute alone
    "u3,a,p2,10,15,b3,Sand,,,2025-01-01\n"  # 4: the point of line 3 again
    "u4,b,p3,15,7,b3,Sand,,,2025-01-02\n"  # 5: bottom border of b.png
)
MERMAID_MAP = (
    f"code,path,head\nHard coral / Branching,{CORALS},\nMacroalgae,{ALGAE},\nSand,Sand,substrate\n"
)


def test_mermaid_points_become_patches_labelled_through_the_map(tmp_path: Path) -> None:
    csv_path, out = _case(tmp_path, MERMAID, "annotations.csv"), tmp_path / "out"
    (tmp_path / "mmap.csv").write_text(MERMAID_MAP, encoding="utf-8")
    argv = ["--mermaid", str(csv_path), "--label-map", str(tmp_path / "mmap.csv")]
    assert _shard([*argv, "--out", str(out), "--patch", "5", "--patch-format", "png"]) == 0
    read = _read(out)
    assert sorted(read) == ["00000000_a_r0_c0", "00000001_a_r10_c15", "00000002_b_r15_c7"]
    for pixels, meta in read.values():
        source = A if meta["image"] == "a.png" else B
        assert np.array_equal(pixels, _by_hand(source, meta["row"], meta["column"], 5))
    corner = read["00000000_a_r0_c0"][1]
    assert corner["labels"] == {"biota": [CORALS]}
    assert corner["label_codes"] == ["Hard coral / Branching"]
    assert corner["point_id"] == "p1" and corner["growth_form_id"] == "g1"
    assert not {"image_id", "row_", "benthic_attribute_name", "growth_form_name"} & set(corner)
    mid = read["00000001_a_r10_c15"][1]
    assert mid["labels"] == {"biota": [ALGAE], "substrate": ["Sand"]}
    source = load_manifest(out)["source"]
    assert source["kind"] == "mermaid" and source["image_column"] == "image_id"
    assert source["label_map"]["Hard coral / Branching"] == {"head": "biota", "path": CORALS}


def test_mermaid_per_image_file_and_its_own_growth_form_separator(tmp_path: Path) -> None:
    """A per-image CSV without an image column names its image by its file name; an unmapped
    code (the growth form joined by --growth-form-sep) is refused up front."""
    text = "row,col,benthic_attribute_name,growth_form_name\n4,6,Hard coral,Branching\n"
    csv_path, out = _case(tmp_path, text, "a_annotations.csv"), tmp_path / "out"
    (tmp_path / "m.csv").write_text(f"code,path\nHard coral:Branching,{CORALS}\n", "utf-8")
    argv = ["--mermaid", str(csv_path), "--label-map", str(tmp_path / "m.csv"), "--patch", "3"]
    assert _shard([*argv, "--out", str(out), "--patch-format", "png"]) == 2  # ' / ' not mapped
    assert not out.exists()
    assert (
        _shard([*argv, "--out", str(out), "--patch-format", "png", "--growth-form-sep", ":"]) == 0
    )
    ((pixels, meta),) = _read(out).values()
    assert meta["image"] == "a.png" and meta["labels"] == {"biota": [CORALS]}
    assert np.array_equal(pixels, _by_hand(A, 4, 6, 3))


# --- the registry -----------------------------------------------------------------------------


def test_every_module_with_a_format_is_registered_and_one_file_adds_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A format file dropped beside the others gets its `--NAME` in make-shards and predict."""
    import ssl_benthic.data.points as points
    from hml_finetune.cli import build_parser as hml_parser
    from ssl_benthic.cli import build_parser

    assert sorted(points.point_formats()) == ["coralnet", "mermaid", "squidle"]
    (tmp_path / "dummyfmt.py").write_text(
        "from ssl_benthic.data.points.base import ENCODING, PointFormat\n"
        "FORMAT = PointFormat('dummyfmt', 'Dummy', 'a dummy export', 'file', (ENCODING,),"
        " read=None, labels=None)\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(points, "__path__", [*points.__path__, str(tmp_path)])
    points.point_formats.cache_clear()
    try:
        assert "dummyfmt" in points.point_formats()
        for parser, command in ((build_parser(), "make-shards"), (hml_parser(), "predict")):
            sub = next(a for a in parser._actions if a.dest == "command").choices[command]
            assert "--dummyfmt" in sub._option_string_actions
    finally:
        points.point_formats.cache_clear()


def test_both_commands_take_the_same_reading_flags_for_each_format() -> None:
    """#22.8: every flag a format reads its export with is an option of make-shards and predict."""
    from hml_finetune.cli import build_parser as hml_parser
    from ssl_benthic.cli import build_parser
    from ssl_benthic.data.points import point_formats

    subs = []
    for parser, command in ((build_parser(), "make-shards"), (hml_parser(), "predict")):
        subs.append(next(a for a in parser._actions if a.dest == "command").choices[command])
    for fmt in point_formats().values():
        for flag in fmt.flags:
            for sub in subs if flag.reads else subs[:1]:
                assert set(flag.names) <= set(sub._option_string_actions), (fmt.name, flag)
    predict = hml_parser().parse_args(
        ["predict", "--checkpoint", "c", "--coralnet", "x.csv", "--out", "o"]
        + ["--encoding", "latin-1", "--image-column", "Image"]
    )
    assert (predict.encoding, predict.image_column) == ("latin-1", "Image")


# --- #22: labels that do not parse, flags that would be ignored --------------------------------


def test_a_label_map_with_another_separator_is_refused_listing_its_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """#22.3: `[SUBSTRATE]>Substrate>Sand` under ' > ' used to become a flat class of `label`."""
    csv_path = _case(tmp_path)
    glued = "code,path\nPOR,[BIOTA]>Biota>Cnidaria>Corals\nALG,[BIOTA] > Biota > Macroalgae\n"
    glued += "SAND,[SUBSTRATE]>Substrate>Sand\n"
    (tmp_path / "map.csv").write_text(glued, encoding="utf-8")
    argv = ["--coralnet", str(csv_path), "--label-map", str(tmp_path / "map.csv")]
    assert _shard([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "2 label paths do not parse with the separator ' > '" in err
    assert "'POR' (row 2: '[BIOTA]>Biota>Cnidaria>Corals')" in err and "'SAND' (row 4" in err
    assert not (tmp_path / "out").exists()
    assert _shard([*argv, "--path-sep", ">", "--out", str(tmp_path / "out"), "--patch", "4"]) == 0
    labels = {k: m["labels"] for k, (_, m) in _read(tmp_path / "out").items()}
    assert labels["00000002_a_r10_c15"] == {"biota": [CORALS, ALGAE]}
    assert labels["00000003_a_r19_c29"] == {"substrate": ["[SUBSTRATE] > Substrate > Sand"]}


@pytest.mark.parametrize(
    ("lineage", "why"),
    [
        ("Biota > Sponges >", "has an empty level"),  # a trailing separator
        ("Biota >  > Sponges", "has an empty level"),
        ("Biota>Sponges", "is not written with the separator ' > '"),
        ("Biota/Sponges", "starts with 'Biota/Sponges', not a plain name"),
    ],
)
def test_a_squidle_lineage_that_does_not_parse_names_its_row(
    tmp_path: Path, capsys: pytest.CaptureFixture, lineage: str, why: str
) -> None:
    """#22.4: these made bogus paths or heads (`biota_sponges`) silently."""
    text = SQUIDLE + f"5,X,{lineage},,0.5,0.5,b.png,31\n"
    csv_path = _case(tmp_path, text, "dataframe.csv")
    assert _shard(["--squidle", str(csv_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"error: {csv_path} row 6: label path {lineage!r}" in err or (
        f"error: {csv_path} row 6: label lineage {lineage!r}" in err
    )
    assert why in err and not (tmp_path / "out").exists()


def test_a_flag_the_format_does_not_use_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """#22.10: `--head` with `--coralnet` was ignored silently (its heads come from the map)."""
    csv_path = _case(tmp_path)
    assert _shard(["--coralnet", str(csv_path), "--head", "x", "--out", str(tmp_path / "o")]) == 2
    assert "--head is not used by --coralnet (it is for --squidle)" in capsys.readouterr().err
    argv = ["--csv", str(csv_path), "--label-map", str(tmp_path / "map.csv")]
    assert _shard([*argv, "--out", str(tmp_path / "o")]) == 2
    assert "--label-map is not used by --csv" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_coralnet_write_back_places_rows_by_the_readers_rule(tmp_path: Path) -> None:
    """#22.1/#22.2 by hand: the write-back finds each row's point as the reader placed it (10.6
    -> 11, half up; a CoralNet-Toolbox 'Image' column), fills k suggestions, gives failed points
    and rows without an image their reason, and keeps every row and column."""
    import io as _io

    from ssl_benthic.data.points import point_format

    text = "Image,Row,Column,Label,Note\na.png,10.6,4.5,POR,x\na.png,11,5,ALG,y\n"
    text += "b.png,2,2,POR,z\n,1,1,POR,w\n"
    export = tmp_path / "toolbox.csv"
    export.write_text(text, encoding="utf-8")
    fmt = point_format("coralnet")
    options = fmt.options({"image_column": "Image"})
    points, skipped = fmt.read(export, options)
    assert [(p.image, p.row, p.column, p.labels) for p in points] == [
        ("a.png", 11, 5, ["POR", "ALG"]),  # 10.6 -> 11 and 4.5 -> 5: one point with line 3
        ("b.png", 2, 2, ["POR"]),
    ]
    assert skipped == [(5, "empty image cell")]
    out = _io.StringIO()
    suggestions = {("a.png", 11, 5): [("POR", 0.704), ("ALG", 0.2), ("SAND", 0.05)]}
    failures = {("b.png", 2, 2): "cannot read image"}
    fmt.write_back(export, out, suggestions, failures, options, k=2, rule="threshold")
    lines = out.getvalue().splitlines()
    assert lines[0] == (
        "Image,Row,Column,Label,Note,Machine suggestion 1,Machine confidence 1,"
        "Machine suggestion 2,Machine confidence 2,Machine label rule,Machine error"
    )
    assert lines[1:] == [
        "a.png,10.6,4.5,POR,x,POR,70,ALG,20,threshold,",
        "a.png,11,5,ALG,y,POR,70,ALG,20,threshold,",
        "b.png,2,2,POR,z,,,,,threshold,cannot read image",
        ",1,1,POR,w,,,,,threshold,empty image cell",
    ]
