"""make-shards input: 16-bit and EXIF-rotated images, bad CSV rows and encodings, folder clutter,
refused arguments and output folders. Every fixture is built here, in tmp_path."""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssl_benthic.cli import main
from ssl_benthic.data.shards.format import ShardSample
from ssl_benthic.data.shards.reader import iter_samples, load_manifest, open_image
from ssl_benthic.data.shards.writer import write_shards

ORIENTATION = 0x0112  # the EXIF tag
GRAY16 = np.array([[0, 128, 129, 257, 1000], [30000, 32767, 65406, 65407, 65535]], np.uint16)
GRAY16_AS_8 = np.array([[0, 0, 1, 1, 4], [117, 127, 254, 255, 255]], np.uint8)  # round(v / 257)


def _png(array: np.ndarray, exif: Image.Exif | None = None, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    extra = {"exif": exif} if exif is not None else {}
    Image.fromarray(array).save(buf, fmt, **extra)
    return buf.getvalue()


def _png48(rgb16: np.ndarray) -> bytes:
    """A 48-bit RGB PNG (Pillow cannot write one), built chunk by chunk."""
    h, w, _ = rgb16.shape
    raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _rotated(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif[0x010F] = "ACME camera"  # Make: kept when the image is re-encoded upright
    return exif


def _pattern(h: int = 4, w: int = 6) -> np.ndarray:
    """A non-square RGB array where every pixel differs, so any wrong turn or flip shows."""
    return np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3) * 3


def _members(out: Path) -> dict[str, bytes]:
    members = {}
    for entry in load_manifest(out)["shards"]:
        with tarfile.open(out / entry["file"]) as tar:
            members.update({m.name: tar.extractfile(m).read() for m in tar})
    return members


def _images(out: Path) -> dict[str, bytes]:
    """{meta path: stored image bytes} of a folder-tree shard set."""
    members = _members(out)
    by_key = {}
    for name, data in members.items():
        key, ext = name.split(".")
        if ext != "json":
            by_key[json.loads(members[f"{key}.json"])["path"]] = data
    return by_key


def _shard_folder(tmp_path: Path, files: dict[str, bytes], *extra: str) -> Path:
    for rel, data in files.items():
        (tmp_path / "tree" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "tree" / rel).write_bytes(data)
    out = tmp_path / "out"
    assert main(["make-shards", "--folder", str(tmp_path / "tree"), "--out", str(out), *extra]) == 0
    return out


# --- 16-bit images ----------------------------------------------------------------------------


def test_reader_scales_16bit_grayscale_png_value_by_value() -> None:
    data = _png(GRAY16)
    assert Image.open(io.BytesIO(data)).mode == "I;16"  # what Pillow 13 gives a 16-bit gray PNG
    decoded = np.asarray(open_image(data))
    assert decoded.shape == (2, 5, 3)
    assert np.array_equal(decoded, np.repeat(GRAY16_AS_8[..., None], 3, axis=2))


def test_16bit_png_is_stored_as_8bit_png_without_resize(tmp_path: Path) -> None:
    out = _shard_folder(tmp_path, {"c/deep.png": _png(GRAY16), "c/plain.png": _png(_pattern())})
    stored = _images(out)
    with Image.open(io.BytesIO(stored["c/deep.png"])) as im:
        assert (im.format, im.mode) == ("PNG", "L")
        assert np.array_equal(np.asarray(im), GRAY16_AS_8)
    assert stored["c/plain.png"] == (tmp_path / "tree/c/plain.png").read_bytes()  # untouched


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16bit_image_is_scaled_when_resized(tmp_path: Path, fmt: str) -> None:
    ext = {"PNG": "png", "TIFF": "tif"}[fmt]
    out = _shard_folder(tmp_path, {f"c/deep.{ext}": _png(GRAY16, fmt=fmt)}, "--resize", "2")
    expected = io.BytesIO()  # short side already 2 px: no resampling, only the JPEG encoding
    Image.fromarray(GRAY16_AS_8).convert("RGB").save(expected, "JPEG", quality=90)
    assert _images(out)[f"c/deep.{ext}"] == expected.getvalue()


def test_48bit_rgb_png_keeps_the_high_byte_and_is_stored_as_8bit(tmp_path: Path) -> None:
    rgb16 = np.array([[[0, 257, 65535], [1000, 30000, 60000]]], np.uint16)
    high_byte = (rgb16 >> 8).astype(np.uint8)  # Pillow's own reduction: within 1 of v / 257
    data = _png48(rgb16)
    assert np.array_equal(np.asarray(open_image(data)), high_byte)
    stored = _images(_shard_folder(tmp_path, {"c/rgb48.png": data}))["c/rgb48.png"]
    assert stored[24] == 8  # IHDR bit depth: re-encoded at 8 bits, not copied as 16
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(stored))), high_byte)


# --- EXIF orientation -------------------------------------------------------------------------


@pytest.mark.parametrize(("orientation", "turns"), [(6, -1), (8, 1), (3, 2)])
def test_exif_rotated_png_is_stored_upright_without_resize(
    tmp_path: Path, orientation: int, turns: int
) -> None:
    pattern = _pattern()
    files = {
        "c/turned.png": _png(pattern, _rotated(orientation)),
        "c/plain.jpg": _png(pattern, fmt="JPEG"),
    }
    stored = _images(_shard_folder(tmp_path, files))
    with Image.open(io.BytesIO(stored["c/turned.png"])) as im:
        assert im.format == "PNG" and ORIENTATION not in im.getexif()
        assert im.getexif()[0x010F] == "ACME camera"
        assert np.array_equal(
            np.asarray(im), np.rot90(pattern, turns)
        )  # np.rot90 turns anticlockwise
    assert stored["c/plain.jpg"] == (tmp_path / "tree/c/plain.jpg").read_bytes()


def test_exif_rotated_jpeg_is_reencoded_upright_as_jpeg(tmp_path: Path) -> None:
    pattern = np.kron(_pattern(2, 3), np.ones((16, 16, 1), np.uint8))  # flat 16x16 blocks
    source = _png(pattern, _rotated(6), fmt="JPEG")
    stored = _images(_shard_folder(tmp_path, {"c/turned.jpg": source}))["c/turned.jpg"]
    with Image.open(io.BytesIO(stored)) as im:
        assert im.format == "JPEG" and im.size == (32, 48) and ORIENTATION not in im.getexif()
        upright = np.rot90(np.asarray(Image.open(io.BytesIO(source))), -1).astype(int)
        assert np.abs(np.asarray(im).astype(int) - upright).mean() < 2  # q95 re-encoding only


def test_exif_rotated_png_is_turned_before_resizing(tmp_path: Path) -> None:
    pattern = _pattern()
    out = _shard_folder(
        tmp_path, {"c/turned.png": _png(pattern, _rotated(8))}, "--resize", "4"
    )  # short side 4 before and after the turn: no resampling
    expected = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.rot90(pattern, 1))).save(expected, "JPEG", quality=90)
    assert _images(out)["c/turned.png"] == expected.getvalue()


def test_reader_turns_exif_rotated_images_from_other_tools(tmp_path: Path) -> None:
    pattern = _pattern()
    write_shards([ShardSample("k", _png(pattern, _rotated(6)), "png", {})], tmp_path / "s")
    ((_, image, _),) = list(iter_samples(tmp_path / "s"))
    assert np.array_equal(np.asarray(image), np.rot90(pattern, -1))


# --- arguments and output folders -------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value"), [("--resize", "-5"), ("--max-per-shard", "0"), ("--max-shard-mb", "0")]
)
def test_out_of_range_numbers_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture, flag: str, value: str
) -> None:
    (tmp_path / "tree/c").mkdir(parents=True)
    (tmp_path / "tree/c/a.png").write_bytes(_png(_pattern()))
    argv = ["make-shards", "--folder", str(tmp_path / "tree"), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exc:
        main([*argv, flag, value])
    assert exc.value.code == 2
    assert f"argument {flag}: must be" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_make_shards_refuses_a_non_empty_out_and_overwrite_replaces_it(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "tree/c").mkdir(parents=True)
    (tmp_path / "tree/c/a.png").write_bytes(_png(_pattern()))
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    argv = ["make-shards", "--folder", str(tmp_path / "tree"), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"error: {out}: folder is not empty; pass --overwrite" in err and "--out" in err
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    assert main([*argv, "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "shard-000000.tar"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tree"]  # no partial left


# --- CSV rows ---------------------------------------------------------------------------------


def _csv_case(tmp_path: Path) -> Path:
    """A CSV whose rows 4, 6, 7 (lines as the file shows them) are missing, corrupt, empty."""
    images = tmp_path  # the CSV's folder: the default --images-root
    (images / "a.png").write_bytes(_png(_pattern()))
    (images / "c.png").write_bytes(_png(_pattern()))
    (images / "bad.jpg").write_bytes(_png(_pattern(32, 32), fmt="JPEG")[:300])
    text = (
        "image,site\n"
        'a.png,"two\nlines"\n'  # lines 2-3: one row
        "gone.png,s2\n"  # line 4
        "c.png,s3\n"
        "bad.jpg,s4\n"  # line 6
        ",s5\n"  # line 7
    )
    (tmp_path / "list.csv").write_text(text, encoding="utf-8")
    return tmp_path / "list.csv"


SKIPPED = [
    {"row": 4, "file": "gone.png", "reason": "missing file"},
    {"row": 6, "file": "bad.jpg"},
    {"row": 7, "file": "", "reason": "empty image cell"},
]


def test_missing_corrupt_and_empty_rows_are_skipped_and_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    csv_path, out = _csv_case(tmp_path), tmp_path / "out"
    assert (
        main(["make-shards", "--csv", str(csv_path), "--label-columns", "", "--out", str(out)]) == 0
    )
    stdout = capsys.readouterr().out
    assert "row 4: gone.png: missing file" in stdout and "row 7: empty image cell" in stdout
    assert "row 6: bad.jpg: cannot read image: " in stdout
    skipped = load_manifest(out)["source"]["skipped"]
    assert [{k: s[k] for k in SKIPPED[i]} for i, s in enumerate(skipped)] == SKIPPED
    assert skipped[1]["reason"].startswith("cannot read image: ")
    assert sorted(m["site"] for _, _, m in iter_samples(out)) == ["s3", "two\nlines"]


def _strict(csv_path: Path, out: Path) -> int:
    """`make-shards --csv CSV --label-columns '' --out OUT --strict`; its exit status."""
    args = ["make-shards", "--csv", str(csv_path), "--label-columns", "", "--out", str(out)]
    return main([*args, "--strict"])


def test_strict_refuses_missing_files_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    csv_path, out = _csv_case(tmp_path), tmp_path / "out"
    assert _strict(csv_path, out) == 2
    err = capsys.readouterr().err
    assert f"{csv_path}: 2 rows have no usable image: row 4: gone.png: missing file" in err
    assert not out.exists()


def test_strict_exits_1_after_writing_when_an_image_does_not_decode(tmp_path: Path) -> None:
    csv_path, out = _csv_case(tmp_path), tmp_path / "out"
    csv_path.write_text("image,site\na.png,s1\nbad.jpg,s2\n")
    assert _strict(csv_path, out) == 1
    assert load_manifest(out)["num_samples"] == 1
    assert [s["row"] for s in load_manifest(out)["source"]["skipped"]] == [3]


def test_latin1_csv_names_line_and_byte_and_encoding_flag_reads_it(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "a.png").write_bytes(_png(_pattern()))
    (tmp_path / "list.csv").write_bytes("image,site\na.png,café\n".encode("latin-1"))
    argv = ["make-shards", "--csv", str(tmp_path / "list.csv"), "--label-columns", ""]
    argv += ["--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'list.csv'}: line 2, byte 10 (0xe9) is not valid utf-8-sig" in err
    assert "pass --encoding latin-1" in err and not (tmp_path / "out").exists()
    assert main([*argv, "--encoding", "latin-1"]) == 0
    assert [m["site"] for _, _, m in iter_samples(tmp_path / "out")] == ["café"]


# --- folder trees -----------------------------------------------------------------------------


def test_folder_skips_hidden_and_non_image_files_and_counts_them(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    png = _png(_pattern())
    files = {
        "sand/1.png": png,
        "sand/._1.png": b"\x00\x05\x16\x07AppleDouble",
        "sand/.DS_Store": b"x",
        "sand/notes.txt": b"x",
        "rock/2.png": png,
        "rock/more/readme.txt": b"x",
        "rock/.thumbs/2.png": png,
        ".git/config": b"x",
        "list.csv": b"x",
    }
    out = _shard_folder(tmp_path, files)
    stdout = capsys.readouterr().out
    assert "skipped 7 files: 2 .txt, 2 hidden, 2 hidden folder, 1 outside a class folder" in stdout
    source = load_manifest(out)["source"]
    assert source["ignored"] == {
        ".txt": 2,
        "hidden": 2,
        "hidden folder": 2,
        "outside a class folder": 1,
    }
    assert source["skipped"] == []
    assert sorted(_images(out)) == ["rock/2.png", "sand/1.png"]
