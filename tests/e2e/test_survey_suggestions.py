"""The survey walk-through's CoralNet suggestions in the probe's two cases (#20): a label-map code on
an inner node, and codes of two heads. Suggestion 1 must be right at least as often as the most
probable coded leaf, and never one code for every point."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
from fixtures.finetune import make_cfg

from hml_finetune.cli import main as hml_main
from hml_finetune.finetune.train import run_finetune
from hml_finetune.hml.hierarchy import Hierarchy
from ssl_benthic.cli import main as ssl_main
from ssl_benthic.data.sample.make_survey import make_survey

SOFT = "[SUBSTRATE] > Substrate > Unconsolidated (soft)"
CASES = {
    "coarse": {"SAND_WAVES": SOFT},  # the probe: an inner node every point used to get
    "two_heads": {"ROCK": "[BIOTA] > Biota > Sponges", "BOULDERS": "[BIOTA] > Biota > Cnidaria"},
}


@pytest.fixture(scope="module")
def survey(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("survey")
    make_survey(root / "survey", n_images=40, size=96)
    return root / "survey"


def _run(survey: Path, out: Path, changes: dict[str, str]) -> tuple[list[dict], list[dict], dict]:
    """The survey with `changes` to its label map: shards, a tiny probe, predictions (CoralNet
    write-back and jsonl); (written rows, jsonl records, code -> path)."""
    codes = {r["code"]: r["path"] for r in csv.DictReader((survey / "label_map.csv").open())}
    codes.update(changes)
    label_map = out / "label_map.csv"
    out.mkdir()
    label_map.write_text("code,path\n" + "".join(f"{c},{p}\n" for c, p in codes.items()))
    shards = out / "shards"
    args = ["make-shards", "--coralnet", str(survey / "annotations.csv"), "--images-root"]
    args += [str(survey / "photos"), "--label-map", str(label_map), "--patch", "32"]
    args += ["--split", "train=0.6,val=0.2,test=0.2", "--group-by", "image", "--out", str(shards)]
    assert ssl_main(args) == 0
    scheme = f"heads.schemes={{substrate: {survey / 'substrate_scheme.csv'}}}"
    run_finetune(
        make_cfg(
            shards,
            out / "run",
            scheme,
            "trainer.max_epochs=20",
            "optimizer.lr=0.1",
            "data.batch_size=16",
        )
    )
    predict = ["predict", "--checkpoint", str(out / "run" / "model.ckpt"), "--num-workers", "0"]
    predict += ["--coralnet", str(survey / "annotations.csv"), "--images-root"]
    predict += [str(survey / "photos"), "--patch", "32"]
    assert hml_main([*predict, "--format", "coralnet", "--out", str(out / "s.csv")]) == 0
    assert hml_main([*predict, "--format", "jsonl", "--out", str(out / "p.jsonl")]) == 0
    rows = list(csv.DictReader((out / "s.csv").open()))
    records = [json.loads(line) for line in (out / "p.jsonl").read_text().splitlines()]
    return rows, records, codes


def _most_probable_leaf(record: dict, codes: dict[str, str]) -> str:
    """The baseline: over every head, the leaf (a node without children) with the highest
    marginal among the coded paths."""
    best, best_p = "", -1.0
    for pred in record["heads"].values():
        probs = pred["probabilities"]
        h = Hierarchy.from_paths([n for n in probs if " > " in n])
        for node in h.nodes:
            if not h.children[node] and node in codes.values() and probs[node] > best_p:
                best, best_p = node, probs[node]
    return best


@pytest.mark.parametrize("case", list(CASES))
def test_suggestion_1_is_at_least_the_most_probable_leaf(survey, tmp_path, case):
    rows, records, codes = _run(survey, tmp_path / case, CASES[case])
    truth = [codes[r["Label"]] for r in rows]
    first = [r["Machine suggestion 1"] for r in rows]
    by_point = {(r["image"], r["row"], r["column"]): r for r in records}
    baseline = [
        _most_probable_leaf(by_point[(r["Name"], int(r["Row"]), int(r["Column"]))], codes)
        for r in rows
    ]
    suggested = sum(codes[c] == t for c, t in zip(first, truth, strict=True))
    leaf = sum(b == t for b, t in zip(baseline, truth, strict=True))
    assert suggested >= leaf, (case, suggested, leaf, len(rows))
    top, n = Counter(first).most_common(1)[0]
    assert n < len(rows), f"{top} is suggestion 1 for every point"
    for code in CASES[case]:  # the probe's codes are not suggestion 1 where they are wrong
        wrong = sum(c == code and codes[c] != t for c, t in zip(first, truth, strict=True))
        assert wrong <= len(rows) // 4, (code, wrong)
    for r in rows:  # probabilities of one label: at most 100% over distinct nodes (two codes
        # of the survey share a path, so they share its probability)
        shown = {
            codes[r[f"Machine suggestion {i}"]]: r[f"Machine confidence {i}"] for i in range(1, 6)
        }
        assert sum(map(int, shown.values())) <= 100 + 5  # five rounded percentages
