"""HMC ARFF reader on the real spo_FUN valid file and on a small hand-written file; preprocessing."""

import numpy as np
import pytest
from fixtures import FIXTURE_DATA

from hml_finetune.hmc.arff import fit_preprocess, read_arff

SPO = FIXTURE_DATA / "spo_FUN.valid.arff"


def test_spo_fun_file():
    d = read_arff(SPO)
    assert d.X.shape == (837, 77 + 5 + 2 + 2) and d.X.dtype == np.float32
    assert len(d.hierarchy) == 500 and d.hierarchy.roots == ["root"]
    assert d.feature_names[77:82] == [f"failed_pcr={v}" for v in "12345"]
    # row 1: 2145,1168,...,0.93,?,?,no,14/13/01/01@42/07
    assert d.X[0, :3].tolist() == [2145, 1168, 1740]
    assert d.X[0, 76] == pytest.approx(0.93)
    assert d.X[0, 77:].tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 0]  # '?' nominal -> zeros; 'no'
    assert d.labels[0] == ["14/13/01/01", "42/07"]
    # row 6: ...,1,?,yes,10/03/05/01@42/04/05@42/29 ; row 19: ...,2,?,no,...
    assert d.X[5, 77:].tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 1]
    assert d.labels[5] == ["10/03/05/01", "42/04/05", "42/29"]
    assert d.X[18, 77:].tolist() == [0, 1, 0, 0, 0, 0, 0, 1, 0]
    assert sum(len(labels) > 1 for labels in d.labels) == 666
    y, m = d.hierarchy.encode(d.labels[0], below_label="negative")
    assert y.sum() == 1 + 4 + 2 and m.all()


TOY = """% a comment line
@RELATION toy
@ATTRIBUTE 'f one' numeric
@ATTRIBUTE f2 REAL
@ATTRIBUTE colour {red,green}
@ATTRIBUTE class hierarchical 01,01/01,01/02,02
@DATA
1.0,?,red,01/01@02
3.0,4.0,green,01/02 % trailing comment
?,8.0,?,02
"""


def test_small_file_missing_values_nominal_and_multilabel(tmp_path):
    path = tmp_path / "toy_FUN.train.arff"
    path.write_text(TOY)
    d = read_arff(path)
    assert d.feature_names == ["f one", "f2", "colour=red", "colour=green"]
    expect = np.array(
        [[1.0, np.nan, 1, 0], [3.0, 4.0, 0, 1], [np.nan, 8.0, 0, 0]], dtype=np.float32
    )
    np.testing.assert_array_equal(d.X, expect)
    assert d.labels == [["01/01", "02"], ["01/02"], ["02"]]
    assert d.hierarchy.nodes == ["root", "01", "02", "01/01", "01/02"]
    pre = fit_preprocess(d.X)
    Z = pre.transform(d.X)
    # column 0: mean 2, population std 1 over the known values; the missing one lands on 0
    np.testing.assert_allclose(Z[:, 0], [-1.0, 1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(Z[:, 1], [0.0, -1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(
        Z[:, 2], [(1 - 1 / 3) / np.sqrt(2 / 9), -np.sqrt(0.5), -np.sqrt(0.5)], atol=1e-6
    )
    # fitted on train+valid, applied to other data
    np.testing.assert_allclose(
        pre.transform(np.array([[np.nan, 10.0, 0, 0]])),
        [[0, 2.0, -np.sqrt(0.5), -np.sqrt(0.5)]],
        atol=1e-6,
    )


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ("1.0,2.0,red,03", r":8: unknown label '03'"),
        ("1.0,2.0,blue,01", r":8: value 'blue' not declared for attribute 'colour'"),
        ("1.0,red,01", r":8: 3 values, expected 4"),
        ("x,2.0,red,01", "non-numeric"),
    ],
)
def test_errors_name_file_line_and_value(tmp_path, row, match):
    path = tmp_path / "bad.arff"
    path.write_text(TOY.split("@DATA\n")[0] + "@DATA\n" + row + "\n")
    with pytest.raises(ValueError, match=match):
        read_arff(path)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="nowhere.arff"):
        read_arff("nowhere.arff")
