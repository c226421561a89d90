"""HMC ARFF reader (C-HMCNN's datasets): numeric and nominal attributes, `?` missing values, and
the hierarchical class attribute (several labels per row joined by `@`).

Numeric `?` becomes NaN (imputed later by `fit_preprocess`); a nominal attribute becomes one-hot
columns, `?` giving all zeros, as C-HMCNN does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import StandardScaler

from hml_finetune.hml.hierarchy import Hierarchy, parse_arff_hierarchy
from ssl_benthic.core.errors import DataError

NUMERIC_TYPES = {"numeric", "real", "integer"}


@dataclass
class ArffData:
    """Features X (N, D) float32 with NaN for missing numeric values, label lists per row, hierarchy."""

    X: np.ndarray
    labels: list[list[str]]
    hierarchy: Hierarchy
    feature_names: list[str] = field(default_factory=list)
    path: str = ""


@dataclass
class _Attribute:
    name: str
    kind: str  # "numeric", "nominal" or "class"
    values: list[str] = field(default_factory=list)


def _parse_attribute(line: str, where: str) -> tuple[_Attribute, Hierarchy | None]:
    """One `@ATTRIBUTE name type` line; the hierarchical class line also yields the hierarchy."""
    rest = line[len("@ATTRIBUTE") :].strip()
    if rest[:1] in "'\"":
        end = rest.index(rest[0], 1)
        name, kind = rest[1:end], rest[end + 1 :].strip()
    else:
        name, _, kind = rest.partition(" ")
        kind = kind.strip()
    low = kind.lower()
    if low.startswith("hierarchical"):
        return _Attribute(name, "class"), parse_arff_hierarchy(line, source=where)
    if low in NUMERIC_TYPES:
        return _Attribute(name, "numeric"), None
    if kind.startswith("{") and kind.endswith("}"):
        values = [v.strip().strip("'\"") for v in kind[1:-1].split(",")]
        return _Attribute(name, "nominal", values), None
    raise DataError(f"{where}: attribute {name!r} has unsupported type {kind!r}")


def _read_sections(path: Path) -> tuple[list[_Attribute], Hierarchy, list[tuple[int, list[str]]]]:
    attrs: list[_Attribute] = []
    hierarchy = None
    rows: list[tuple[int, list[str]]] = []
    in_data = False
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if in_data:
                body = line.split("%", 1)[0].strip()
                if body:
                    rows.append((lineno, body.split(",")))
                continue
            head = line[:10].upper()
            if head == "@ATTRIBUTE":
                attr, h = _parse_attribute(line.strip(), f"{path}:{lineno}")
                attrs.append(attr)
                hierarchy = h or hierarchy
            elif head.startswith("@DATA"):
                in_data = True
    if hierarchy is None:
        raise DataError(f"{path}: no hierarchical class attribute")
    return attrs, hierarchy, rows


def _numeric(rows: list[tuple[int, list[str]]], idx: list[int], path: Path) -> np.ndarray:
    """The numeric columns `idx` as float64 (N, len(idx)), `?` -> NaN, parsed in one C pass."""
    joined = ",".join(",".join(fields[i] for i in idx) for _, fields in rows)
    flat = np.array(joined.replace("?", "nan").split(",") if joined else [], dtype=object)
    try:
        values = flat.astype(np.float64)
    except ValueError as err:
        raise DataError(f"{path}: non-numeric value in a numeric attribute: {err}") from None
    return values.reshape(len(rows), len(idx))


def _one_hot(
    rows: list[tuple[int, list[str]]], col: int, attr: _Attribute, path: Path
) -> np.ndarray:
    """One nominal column as one-hot (N, n_values); `?` gives a zero row."""
    lookup = {v: i for i, v in enumerate(attr.values)}
    out = np.zeros((len(rows), len(attr.values)))
    for r, (lineno, fields) in enumerate(rows):
        v = fields[col].strip().strip("'\"")
        if v == "?":
            continue
        if v not in lookup:
            raise DataError(
                f"{path}:{lineno}: value {v!r} not declared for attribute {attr.name!r}"
            )
        out[r, lookup[v]] = 1.0
    return out


def _features(attrs: list[_Attribute], rows, path: Path) -> tuple[np.ndarray, list[str]]:
    """Features in attribute order (numeric as float, nominal one-hot) and their column names."""
    numeric = [i for i, a in enumerate(attrs) if a.kind == "numeric"]
    num_values = _numeric(rows, numeric, path)
    blocks, names = [], []
    for i, attr in enumerate(attrs):
        if attr.kind == "numeric":
            blocks.append(num_values[:, [numeric.index(i)]])
            names.append(attr.name)
        elif attr.kind == "nominal":
            blocks.append(_one_hot(rows, i, attr, path))
            names += [f"{attr.name}={v}" for v in attr.values]
    X = np.concatenate(blocks, axis=1) if blocks else np.zeros((len(rows), 0))
    return X.astype(np.float32), names


def read_arff(path: str | Path) -> ArffData:
    """Read one HMC ARFF file: features, label lists (node names) per row, and the hierarchy."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ARFF file not found: {path}")
    attrs, hierarchy, rows = _read_sections(path)
    for lineno, fields in rows:
        if len(fields) != len(attrs):
            raise DataError(f"{path}:{lineno}: {len(fields)} values, expected {len(attrs)}")
    class_idx = next(i for i, a in enumerate(attrs) if a.kind == "class")
    labels = []
    for lineno, fields in rows:
        row_labels = [t.strip() for t in fields[class_idx].split("@") if t.strip()]
        for t in row_labels:
            if t not in hierarchy.index:
                raise DataError(f"{path}:{lineno}: unknown label {t!r}: not in the class hierarchy")
        labels.append(row_labels)
    X, names = _features(attrs, rows, path)
    return ArffData(X, labels, hierarchy, names, str(path))


@dataclass
class Preprocessor:
    """Mean imputation then standard scaling, both fitted on the raw train+valid features (C-HMCNN)."""

    imputer: SimpleImputer
    scaler: StandardScaler

    def transform(self, X: np.ndarray) -> np.ndarray:
        return self.scaler.transform(self.imputer.transform(X)).astype(np.float32)


def fit_preprocess(X_trainvalid: np.ndarray) -> Preprocessor:
    """Fit SimpleImputer(mean) and StandardScaler on raw train+valid X (NaNs ignored by both).

    Imputed values land on 0 after scaling; an all-missing column is imputed 0 and left unscaled.
    """
    imputer = SimpleImputer(strategy="mean", keep_empty_features=True).fit(X_trainvalid)
    scaler = StandardScaler().fit(X_trainvalid)
    scaler.mean_ = np.nan_to_num(scaler.mean_, nan=0.0)
    scaler.scale_ = np.nan_to_num(scaler.scale_, nan=1.0)
    return Preprocessor(imputer, scaler)
