"""Hierarchy: structure, relations, targets and masks on a CATAMI-like tree, errors, ARFF headers."""

import numpy as np
import pytest
from fixtures import FIXTURE_DATA

from hml_finetune.hml.hierarchy import Hierarchy

DATA = FIXTURE_DATA
B = "[BIOTA]"
BB = "[BIOTA] > Biota"
SP = "[BIOTA] > Biota > Sponges"
MASSIVE = "[BIOTA] > Biota > Sponges > Massive forms"
ERECT = "[BIOTA] > Biota > Sponges > Erect forms"
CNID = "[BIOTA] > Biota > Cnidaria"
S = "[SUBSTRATE]"
SS = "[SUBSTRATE] > Substrate"
SAND = "[SUBSTRATE] > Substrate > Sand"
ROCK = "[SUBSTRATE] > Substrate > Rock"
PATHS = [MASSIVE, ERECT, CNID, SAND, ROCK]


@pytest.fixture
def catami() -> Hierarchy:
    return Hierarchy.from_paths(PATHS)


def vec(h: Hierarchy, names: set[str]) -> np.ndarray:
    return np.array([1.0 if n in names else 0.0 for n in h.nodes], dtype=np.float32)


def test_structure_from_paths(catami):
    h = catami
    assert len(h) == 10
    assert h.roots == [B, S]
    assert set(h.nodes) == {B, BB, SP, MASSIVE, ERECT, CNID, S, SS, SAND, ROCK}
    for parent, kids in h.children.items():
        for kid in kids:
            assert h.index[parent] < h.index[kid]
    assert h.parents[MASSIVE] == [SP]
    assert set(h.children[BB]) == {SP, CNID}
    assert h.depth[B] == 0 and h.depth[MASSIVE] == 3 and h.depth[SAND] == 2
    assert h.height[B] == 3 and h.height[S] == 2 and h.height[CNID] == 0
    assert h.ancestors(MASSIVE) == {SP, BB, B}
    assert h.descendants(BB) == {SP, MASSIVE, ERECT, CNID}
    assert h.descendants(ROCK) == set()


def test_label_stopping_early_masks_its_descendants_and_unannotated_head(catami):
    h = catami
    y, m = h.encode([SP])
    np.testing.assert_array_equal(y, vec(h, {B, BB, SP}))
    # sponge kinds unknown; cnidaria a known negative; the substrate head unannotated
    np.testing.assert_array_equal(m, vec(h, {B, BB, SP, CNID}))


def test_another_path_makes_descendant_positive(catami):
    h = catami
    y, m = h.encode([SP, MASSIVE, SAND])
    np.testing.assert_array_equal(y, vec(h, {B, BB, SP, MASSIVE, S, SS, SAND}))
    everything = set(h.nodes)
    np.testing.assert_array_equal(m, vec(h, everything - {ERECT}))


def test_leaf_label_masks_nothing_in_its_head(catami):
    h = catami
    y, m = h.encode([CNID])
    np.testing.assert_array_equal(y, vec(h, {B, BB, CNID}))
    np.testing.assert_array_equal(m, vec(h, {B, BB, SP, MASSIVE, ERECT, CNID}))


def test_below_label_negative_keeps_descendants_known(catami):
    h = catami
    y, m = h.encode([SP], below_label="negative")
    np.testing.assert_array_equal(m, vec(h, {B, BB, SP, MASSIVE, ERECT, CNID}))


def test_empty_labels_mask_everything_and_encode_many(catami):
    h = catami
    y, m = h.encode([])
    assert y.sum() == 0 and m.sum() == 0
    Y, M = h.encode_many([[SP], [], [ROCK]])
    assert Y.shape == M.shape == (3, 10)
    np.testing.assert_array_equal(M[0].numpy(), h.encode([SP])[1])
    assert M[1].sum() == 0
    np.testing.assert_array_equal(Y[2].numpy(), vec(h, {S, SS, ROCK}))
    np.testing.assert_array_equal(M[2].numpy(), vec(h, {S, SS, SAND, ROCK}))


def test_unknown_label_names_label_and_sample(catami):
    with pytest.raises(ValueError, match=r"Sponges > Glass.*sample 'img_7'"):
        catami.encode([SP + " > Glass"], sample_key="img_7")
    with pytest.raises(ValueError, match="Nope.*#1"):
        catami.encode_many([[SP], ["Nope"]])


def test_split_roots(catami):
    heads = catami.split_roots()
    assert list(heads) == [B, S]
    assert heads[B].nodes == [n for n in catami.nodes if n.startswith(B)]
    assert heads[S].roots == [S] and len(heads[S]) == 4


def test_dag_depth_is_longest_path_and_descendant_matrix():
    h = Hierarchy.from_edges([("a", "b"), ("b", "c"), ("a", "c"), ("c", "d"), ("x", "d")])
    assert h.roots == ["a", "x"]
    assert h.depth == {"a": 0, "b": 1, "c": 2, "d": 3, "x": 0}
    assert h.height == {"a": 3, "b": 2, "c": 1, "d": 0, "x": 1}
    assert h.ancestors("d") == {"a", "b", "c", "x"}
    R = h.descendant_matrix()
    for name in h.nodes:
        expect = {h.index[d] for d in h.descendants(name) | {name}}
        assert set(np.flatnonzero(R[h.index[name]])) == expect
    parent, child = h.edge_index()
    assert sorted(zip(parent.tolist(), child.tolist(), strict=True)) == sorted(
        (h.index[p], h.index[c])
        for p, c in [("a", "b"), ("b", "c"), ("a", "c"), ("c", "d"), ("x", "d")]
    )
    # d is known under both heads; a sample annotated only under 'x' leaves the 'a' head unknown
    y, m = h.encode(["x"])
    assert m[h.index["d"]] == 0 and m[h.index["b"]] == 0 and m[h.index["x"]] == 1


def test_errors_name_the_offender():
    with pytest.raises(ValueError, match="cycle in hierarchy: b -> c -> d -> b"):
        Hierarchy.from_edges([("a", "b"), ("b", "c"), ("c", "d"), ("d", "b")])
    with pytest.raises(ValueError, match="cycle.*'q'"):
        Hierarchy.from_edges([("q", "q")])
    with pytest.raises(ValueError, match="duplicate node.*Sand"):
        Hierarchy.from_paths([SAND, ROCK, SAND])
    with pytest.raises(ValueError, match="duplicate node 'a'"):
        Hierarchy(["a", "b", "a"], [("a", "b")])
    with pytest.raises(ValueError, match="duplicate edge"):
        Hierarchy.from_edges([("a", "b"), ("a", "b")])
    with pytest.raises(ValueError, match="unknown node 'z'"):
        Hierarchy(["a"], [("a", "z")])


def test_funcat_hierarchy_from_arff():
    h = Hierarchy.from_arff(DATA / "spo_FUN.valid.arff")
    assert len(h) == 500
    assert h.roots == ["root"]
    assert h.parents["01/01/03"] == ["01/01"] and h.parents["01"] == ["root"]
    assert h.depth["01/01/03/01/01"] == 5
    assert all(len(p) == 1 for n, p in h.parents.items() if n != "root")


def test_go_dag_from_arff(tmp_path):
    path = tmp_path / "toy_GO.train.arff"
    path.write_text(
        "@RELATION toy\n@ATTRIBUTE f1 numeric\n"
        "@ATTRIBUTE class hierarchical root/GO1,root/GO2,GO1/GO3,GO2/GO3,GO3/GO4\n@DATA\n1,GO4\n"
    )
    h = Hierarchy.from_arff(path)
    assert h.roots == ["root"] and len(h) == 5
    assert set(h.parents["GO3"]) == {"GO1", "GO2"}
    assert h.depth["GO4"] == 3


def test_arff_header_with_repeated_terms_merges_them_and_warns(tmp_path):
    """ImCLEF07D writes some terms several times; they name one node each (C-HMCNN merges them)."""
    path = tmp_path / "toy.arff"
    header = (
        "@RELATION toy\n@ATTRIBUTE f1 numeric\n@ATTRIBUTE class hierarchical {}\n@DATA\n1,2/1\n"
    )
    path.write_text(header.format("1,1/1,2,2/1,1,1/1,2/2,2"))
    with pytest.warns(
        UserWarning, match=r"toy\.arff: 3 repeated terms.*5 distinct.*'1', '1/1', '2'"
    ):
        h = Hierarchy.from_arff(path)
    path.write_text(header.format("1,1/1,2,2/1,2/2"))
    assert h.nodes == Hierarchy.from_arff(path).nodes
    assert len(h) == 6 and h.parents["2/2"] == ["2"]
    path.write_text(header.format("1,root,1/1"))
    with pytest.raises(ValueError, match="'root' is added above the top level"):
        Hierarchy.from_arff(path)
