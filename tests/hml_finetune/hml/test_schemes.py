"""Any label scheme for an HML head: scheme files (bracketed and bracket-less), the data's own paths,
targets and masks, training, unknown labels with their nearest path, checkpoints that never need the
scheme file again, and `summary` for non-CATAMI heads and unlabelled splits."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from fixtures.finetune import make_cfg
from fixtures.pretrain import jpeg

from hml_finetune.cli import main as hml_main
from hml_finetune.finetune.config import FinetuneConfig
from hml_finetune.finetune.inference import load_finetuned
from hml_finetune.finetune.labels import LabelledSplit, build_hierarchies, encode_split
from hml_finetune.finetune.train import run_finetune
from hml_finetune.hml.schemes import load_scheme
from ssl_benthic.core.config import ConfigError, load_config
from ssl_benthic.core.errors import LabelError
from ssl_benthic.data.shards.format import ShardSample
from ssl_benthic.data.shards.summary import summarize
from ssl_benthic.data.shards.writer import write_shards

SPONGE = "[BIOTA] > Biota > Sponges"
CONDITION = [  # a lab's coral-condition scheme, 3 levels, bracketed root
    "[CONDITION] > Coral > Healthy",
    "[CONDITION] > Coral > Bleached > Partly",
    "[CONDITION] > Coral > Bleached > Fully",
    "[CONDITION] > Coral > Dead",
]
TAXA = [  # a WoRMS-style lineage list: no bracketed root, '/' as the separator
    "Animalia/Cnidaria/Anthozoa",
    "Animalia/Cnidaria/Hydrozoa",
    "Animalia/Porifera/Demospongiae",
]


def scheme_files(root: Path) -> tuple[Path, Path]:
    condition = root / "coral.csv"
    condition.write_text(
        "path,\n" + "".join(f"{p},\n" for p in CONDITION)
    )  # header, trailing commas
    taxon = root / "taxa.txt"
    taxon.write_text("\n".join(TAXA) + "\n")  # no header
    return condition, taxon


def _labels(i: int) -> dict[str, list[str]]:
    labels: dict[str, list[str]] = {"biota": [SPONGE]}
    labels["condition"] = [CONDITION[i % 4] if i % 5 else "[CONDITION] > Coral > Bleached"]
    if i % 3:  # a third leave the taxon head unannotated
        labels["taxon"] = [["Animalia/Cnidaria/Anthozoa", "Animalia/Porifera"][i % 2]]
    return labels


@pytest.fixture(scope="module")
def survey(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("survey")
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("val", 20), ("test", 20)):
        samples = [
            ShardSample(f"{split}{i:03d}", jpeg(rng), "jpg", {"labels": _labels(i)})
            for i in range(n)
        ]
        write_shards(samples, root / split, name=split, max_per_shard=10)
    return root


def survey_cfg(root: Path, out: Path, condition: Path, taxon: Path, *extra: str):
    schemes = f"heads.schemes={{condition: {condition}, taxon: {taxon}}}"
    return make_cfg(root, out, schemes, "heads.separators={taxon: /}", *extra)


def test_scheme_files_parse_and_label_nodes(tmp_path):
    condition_file, taxon_file = scheme_files(tmp_path)
    condition = load_scheme("condition", str(condition_file))
    assert "[CONDITION] > Coral > Bleached" in condition.nodes  # prefixes: labels stop early
    assert len(condition.nodes) == 6 and condition.bracketed
    taxon = load_scheme("taxon", str(taxon_file), sep="/")
    assert taxon.node("Animalia/Porifera") == "[TAXON] > Animalia > Porifera"
    assert taxon.label("[TAXON] > Animalia > Porifera") == "Animalia/Porifera"  # written back
    assert not taxon.bracketed
    assert taxon.sha256 == hashlib.sha256(taxon_file.read_bytes()).hexdigest()
    with pytest.raises(LabelError) as err:
        taxon.check("Animalia/Cnidaria/Antozoa", "s-3", "test")
    assert str(err.value) == (
        "test: sample 's-3': label 'Animalia/Cnidaria/Antozoa' (head 'taxon') is not in the "
        f"scheme {taxon_file}; the nearest path is 'Animalia/Cnidaria/Anthozoa'"
    )
    with pytest.raises(ConfigError, match="'catami' covers the heads biota"):
        load_scheme("taxon", "catami")


def test_a_scheme_file_covering_several_heads_gives_each_head_its_own_paths(tmp_path):
    """#22.6: as the CATAMI file covers four heads (and SQUIDLE+'s extended CATAMI export more)."""
    both = tmp_path / "both.csv"
    stressor = ["[STRESSOR] > Abiotic > Physical damage", "[STRESSOR] > Biotic > Disease"]
    both.write_text("path\n" + "\n".join([*CONDITION, *stressor]) + "\n")
    condition = load_scheme("condition", str(both))
    assert condition.nodes == load_scheme("condition", str(scheme_files(tmp_path)[0])).nodes
    assert "[STRESSOR] > Biotic" in load_scheme("stressor", str(both)).nodes
    assert "[STRESSOR] > Biotic" not in condition.nodes
    with pytest.raises(
        ConfigError,
        match=r"both\.csv: no path of head 'relief' \(root \[RELIEF\]\); the file's roots: "
        r"\[CONDITION\], \[STRESSOR\]",
    ):
        load_scheme("relief", str(both))


def test_targets_and_masks_follow_the_scheme(tmp_path):
    condition_file, _ = scheme_files(tmp_path)
    schemes = {"condition": load_scheme("condition", str(condition_file))}
    split = LabelledSplit(
        ["a", "b", "c"],
        [
            {"condition": ["[CONDITION] > Coral > Bleached > Partly"]},
            {"condition": ["[CONDITION] > Coral > Bleached"]},  # stops early
            {},
        ],
    )
    h = build_hierarchies([split], schemes)["condition"]
    assert h.nodes == [
        "[CONDITION]",
        "[CONDITION] > Coral",
        "[CONDITION] > Coral > Bleached",
        "[CONDITION] > Coral > Bleached > Partly",
    ]
    y, m = encode_split(split, {"condition": h}, schemes)["condition"]
    assert y.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0], [0, 0, 0, 0]]
    assert m.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0], [0, 0, 0, 0]]  # below an early stop: unknown


def test_training_with_scheme_files_and_no_scheme_file_afterwards(survey, tmp_path):
    condition, taxon = scheme_files(tmp_path)
    result = run_finetune(survey_cfg(survey, tmp_path / "run", condition, taxon))
    assert set(result["heads"]) == {"biota", "condition", "taxon"}
    assert result["heads"]["taxon"]["scheme"]["file"] == "taxa.txt"
    resolved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert resolved["heads"]["schemes"] == {
        "biota": "catami",
        "condition": str(condition),
        "taxon": str(taxon),
    }
    sha = hashlib.sha256(taxon.read_bytes()).hexdigest()
    assert resolved["heads"]["scheme_sha256"]["taxon"] == sha
    _, hierarchies, meta = load_finetuned(tmp_path / "run" / "model.ckpt")
    assert meta["schemes"]["taxon"]["sha256"] == sha
    assert "[TAXON] > Animalia > Porifera" in hierarchies["taxon"].nodes

    condition.unlink()  # evaluation and prediction read the hierarchy from the checkpoint
    taxon.unlink()
    out = tmp_path / "p.jsonl"
    args = ["--checkpoint", str(tmp_path / "run" / "model.ckpt"), "--shards", str(survey / "test")]
    assert (
        hml_main(["predict", *args, "--out", str(out), "--format", "jsonl", "--num-workers", "0"])
        == 0
    )
    record = json.loads(out.read_text().splitlines()[0])
    assert "Animalia/Porifera" in record["heads"]["taxon"]["probabilities"]  # the scheme's form
    assert hml_main(["evaluate", *args, "--out", str(tmp_path / "eval")]) == 0


def test_a_changed_scheme_file_fails_a_rerun_of_the_resolved_config(survey, tmp_path):
    condition, taxon = scheme_files(tmp_path)
    run_finetune(survey_cfg(survey, tmp_path / "run", condition, taxon, "trainer.max_epochs=1"))
    taxon.write_text("\n".join(TAXA[:2]) + "\n")
    cfg = load_config(
        FinetuneConfig, tmp_path / "run" / "config.yaml", [f"output_dir={tmp_path / 'again'}"]
    )
    with pytest.raises(
        ConfigError, match=r"heads\.scheme_sha256\.taxon: the scheme file .* has changed"
    ):
        run_finetune(cfg)


def test_a_label_outside_its_scheme_file_fails_before_training(survey, tmp_path):
    condition, taxon = scheme_files(tmp_path)
    taxon.write_text("Animalia/Cnidaria/Anthozoa\n")  # Porifera is no longer in the scheme
    with pytest.raises(
        LabelError,
        match=r"sample 'train\d+': label 'Animalia/Porifera' \(head 'taxon'\) is not in the scheme .*nearest path is 'Animalia/Cnidaria'",
    ):
        run_finetune(survey_cfg(survey, tmp_path / "run", condition, taxon))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_scheme_for_a_head_that_is_not_trained_names_it(survey, tmp_path):
    condition, taxon = scheme_files(tmp_path)
    cfg = make_cfg(survey, tmp_path / "run", f"heads.schemes={{conditon: {condition}}}")
    with pytest.raises(
        ConfigError, match=r"heads\.schemes names head 'conditon' \(did you mean 'condition'\?\)"
    ):
        run_finetune(cfg)


def test_summary_counts_any_scheme_and_unlabelled_images(survey, tmp_path):
    s = summarize(survey)["splits"]["train"]
    assert s["samples"] == s["labelled"] == 40
    taxon = s["heads"]["taxon"]
    assert (taxon["annotated"], taxon["unannotated"]) == (26, 14)
    assert taxon["depth"] == {2: 13, 3: 13}  # the '/' lineage's own levels (#22.6)
    told = summarize(survey, label_sep=" > ")["splits"]["train"]["heads"]["taxon"]
    assert told["depth"] == {1: 26}  # --label-sep wins
    assert taxon["invalid"] is None  # only CATAMI heads are checked against a scheme here
    assert s["heads"]["condition"]["depth"] == {2: 24, 3: 16}
    rng = np.random.default_rng(1)
    empty = [ShardSample(f"u{i}", jpeg(rng), "jpg", {"labels": {"biota": []}}) for i in range(4)]
    write_shards(empty, tmp_path / "unlabelled", name="u")
    u = summarize(tmp_path / "unlabelled")["splits"]["unlabelled"]
    assert (u["samples"], u["labelled"]) == (4, 0)  # empty label cells: unlabelled
