"""A small point-annotated survey drawn like the sample, so the CoralNet workflow runs end to end
without real photographs: `photos/` (JPEGs), `annotations.csv` (CoralNet's export columns), a label
map from the survey's codes to CATAMI substrate paths, and a scheme file for the substrate head.

Each photograph shows one substrate over its whole frame, so every point of it carries that
substrate's code; points fall at random places, and the first two of every photograph on its corner
and its bottom border (patches there are reflect-padded). Same seed, same bytes.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import numpy as np

from ssl_benthic.data.sample.labels import SUBSTRATE_CLASSES
from ssl_benthic.data.sample.make_sample import draw_labels, draw_sample
from ssl_benthic.data.shards.build import atomic_folder

__all__ = ["make_survey", "cli_make_survey", "SURVEY_CODES"]

# CoralNet-style short codes of the sample's substrate classes -> their CATAMI paths
SURVEY_CODES = {name.upper(): spec[0] for name, spec in SUBSTRATE_CLASSES.items()}


def _points(seed: int, index: int, size: int, n: int) -> list[tuple[int, int]]:
    """(row, column) of the n points of a photograph: the top-left corner, the bottom border,
    then seeded random places."""
    rng = np.random.default_rng([seed, 4, index, 2])
    fixed = [(0, 0), (size - 1, size // 2)]
    random = [tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(max(0, n - 2))]
    return (fixed + random)[:n]


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")


def make_survey(
    out_dir: str | Path,
    *,
    seed: int = 0,
    n_images: int = 60,
    size: int = 128,
    points_per_image: int = 5,
    overwrite: bool = False,
) -> dict:
    """Write the survey into `out_dir` (built beside it, moved into place when complete); counts."""
    rows, used = [], set()
    with atomic_folder(out_dir, overwrite=overwrite) as tmp:
        (tmp / "photos").mkdir()
        for i in range(n_images):
            name = f"IMG_{i:04d}.jpg"
            (tmp / "photos" / name).write_bytes(draw_sample(seed, "survey", i, size=size).image)
            code = draw_labels(seed, "survey", i).scene.substrate.upper()
            used.add(code)
            for row, column in _points(seed, i, size, points_per_image):
                rows.append([name, row, column, code, "synthetic", "2026-01-01"])
        _write_csv(
            tmp / "annotations.csv",
            ["Name", "Row", "Column", "Label", "Annotator", "Date annotated"],
            rows,
        )
        codes = sorted(SURVEY_CODES)  # the lab's whole label set, as a CoralNet source has
        _write_csv(tmp / "label_map.csv", ["code", "path"], [[c, SURVEY_CODES[c]] for c in codes])
        scheme = sorted(set(SURVEY_CODES.values()))
        _write_csv(tmp / "substrate_scheme.csv", ["path"], [[p] for p in scheme])
    return {"images": n_images, "points": len(rows), "codes": len(used)}


def cli_make_survey(args: argparse.Namespace) -> int:
    """`ssl-benthic make-survey --out DIR`: the survey, and what to run next."""
    counts = make_survey(
        args.out, seed=args.seed, n_images=args.n_images, size=args.size, overwrite=args.overwrite
    )
    print(
        f"wrote {counts['images']} photographs, {counts['points']} points and {counts['codes']} "
        f"label codes to {args.out} (photos/, annotations.csv, label_map.csv, substrate_scheme.csv)"
    )
    return 0
