"""Percent cover against counts done by hand: per image and group, every depth, unresolved and
unreadable points kept, and the column checks of --cover-by."""

from __future__ import annotations

import csv

import pytest

from hml_finetune.hml.hierarchy import Hierarchy
from hml_finetune.hml.schemes import Scheme
from hml_finetune.predict.cover import CoverCounts, cover_groups, write_cover
from ssl_benthic.core.errors import ConfigError
from ssl_benthic.data.points.base import Point

S = "[SUBSTRATE]"
H = Hierarchy.from_paths([f"{S} > Rock", f"{S} > Rock > Boulder", f"{S} > Sand"])
SCHEMES = {"substrate": Scheme("substrate", "data", bracketed=False)}  # written without the root


def counts(groups: dict[str, str] | None = None) -> CoverCounts:
    c = CoverCounts({"substrate": H}, SCHEMES, groups)
    for image, label in [
        ("A.jpg", "Rock > Boulder"),
        ("A.jpg", "Rock"),
        ("A.jpg", "Sand"),
        ("A.jpg", None),  # the head's root: nothing confident
        ("B.jpg", "Rock > Boulder"),
        ("B.jpg", "unreadable"),
        ("C.jpg", "Sand"),
    ]:
        if label == "unreadable":
            c.add(image, None)
        else:
            c.add(image, {"substrate": S if label is None else f"{S} > {label}"})
    return c


def table(rows) -> dict[tuple, tuple[int, float]]:
    return {
        (r["group"], r["image"], r["depth"], r["node"]): (r["points"], r["cover"]) for r in rows
    }


def test_cover_per_image_by_hand():
    t = table(counts().rows())
    # A: 4 points. depth 1: Rock 2 (Boulder, Rock), Sand 1, the root point unresolved
    assert t[("", "A.jpg", 1, "Rock")] == (2, 0.5)
    assert t[("", "A.jpg", 1, "Sand")] == (1, 0.25)
    assert t[("", "A.jpg", 1, "unresolved")] == (1, 0.25)
    # depth 2: Boulder 1; Rock, Sand and the root stop above it
    assert t[("", "A.jpg", 2, "Rock > Boulder")] == (1, 0.25)
    assert t[("", "A.jpg", 2, "unresolved")] == (3, 0.75)
    # B: one unreadable point of two, at every depth
    assert t[("", "B.jpg", 1, "Rock")] == (1, 0.5)
    assert t[("", "B.jpg", 2, "unreadable")] == (1, 0.5)
    assert len(t) == 5 + 2 + 2 + 2  # A: 3 + 2 nodes, B: 2 + 2, C: Sand at 1, unresolved at 2
    for key in {(g, im, d) for g, im, d, _ in t}:  # covers of an image sum to 1 at each depth
        assert sum(v[1] for k, v in t.items() if k[:3] == key) == pytest.approx(1.0)


def test_cover_per_group_pools_points_and_depths_can_be_asked():
    t = table(counts({"A.jpg": "site1", "B.jpg": "site1", "C.jpg": "site2"}).rows([1]))
    assert {k[2] for k in t} == {1}
    assert t[("site1", "A.jpg", 1, "Rock")] == (2, 0.5)  # image rows carry their group
    # site1 = A + B: 6 points; Rock 3, Sand 1, unresolved 1, unreadable 1
    assert t[("site1", "", 1, "Rock")] == (3, 0.5)
    assert t[("site1", "", 1, "Sand")] == (1, pytest.approx(1 / 6))
    assert t[("site1", "", 1, "unreadable")] == (1, pytest.approx(1 / 6))
    assert t[("site2", "", 1, "Sand")] == (1, 1.0)


def test_write_cover_reads_back(tmp_path):
    path = write_cover(tmp_path / "cover.csv", counts().rows())
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == ["group", "image", "head", "depth", "node", "points", "cover"]
    assert rows[0] == {
        "group": "",
        "image": "A.jpg",
        "head": "substrate",
        "depth": "1",
        "node": "Rock",
        "points": "2",
        "cover": "0.500000",
    }


def test_cover_groups_checks_the_column():
    pts = [Point("A", 2, meta={"Site": "s1"}), Point("A", 3, meta={"Site": "s1"})]
    assert cover_groups(pts, "Site") == {"A": "s1"}
    with pytest.raises(ConfigError, match="not a column"):
        cover_groups(pts, "Transect")
    with pytest.raises(ConfigError, match="one value per image"):
        cover_groups([*pts, Point("A", 4, meta={"Site": "s2"})], "Site")
