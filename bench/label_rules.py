"""Which label rule, and does temperature calibration help: hop distance and hF of each label rule,
ECE before and after temperature, on the sample (linear probe) and on HMC FunCat sets.

The default rule (`expected-hops`) must not be worse than `threshold` on mean hop distance on any
set; the table says where it is better. Thresholds are tuned per node on validation predictions
(made monotone), after calibration, as `hml-finetune train` does.

    OMP_NUM_THREADS=2 .venv/bin/python bench/label_rules.py [--seeds 0,1,2] [--ssl-export DIR]
        [--hmc-dir DIR] [--hmc-datasets spo_FUN,cellcycle_FUN] [--hmc-epochs N]
        [--no-sample] [--merge]

Without --hmc-dir (or HMC_DATA_DIR) only the sample runs (--no-sample: only HMC). Writes
bench/results/label_rules.md and .jsonl (one row per set, start, seed); --merge keeps the .jsonl's
rows of the sets this run does not make, so runs split over processes make one table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from hml_finetune.compare.report import sign_flip_p
from hml_finetune.finetune.config import FinetuneConfig
from hml_finetune.finetune.train import run_finetune
from hml_finetune.hmc.run import HMCSettings, load_splits, train_mask, train_model
from hml_finetune.hml.calibration import choose_temperature
from hml_finetune.hml.hierarchical_metrics import hierarchical_scores
from hml_finetune.hml.label_rules import LABEL_RULES
from hml_finetune.hml.metrics import eval_columns
from hml_finetune.hml.thresholds import tune_rule
from ssl_benthic.core.config import load_config
from ssl_benthic.data.sample.make_sample import make_sample

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs/finetune/linear_sample.yaml"
COLUMNS = ["h_f1", "ece_uncalibrated", "ece"]
FUNCAT = "cellcycle_FUN,derisi_FUN,eisen_FUN,gasch1_FUN,gasch2_FUN,seq_FUN,spo_FUN"


def sample_rows(seeds: list[int], export: str | None, work: Path) -> list[dict]:
    """One row per (start, seed, head) of a linear probe on the synthetic sample."""
    shards = work / "sample"
    if not (shards / "manifest.json").is_file():
        make_sample(str(shards))
    rows = []
    for start in ["random"] + ([export] if export else []):
        for seed in seeds:
            cfg = load_config(
                FinetuneConfig,
                str(RECIPE),
                [
                    f"backbone.weights={start}",
                    f"seed={seed}",
                    f"output_dir={work / f'run-{Path(start).name}-{seed}'}",
                    *(f"data.{s}={shards / s}" for s in ("train", "val", "test")),
                ],
            )
            result = run_finetune(cfg, overwrite=True)
            for head, m in result["heads"].items():
                if "hierarchical" in m:
                    rows.append(
                        {
                            "set": f"sample/{head}",
                            "start": Path(start).name,
                            "seed": seed,
                            **m["hierarchical"],
                        }
                    )
    return rows


def hmc_row(data_dir: str, dataset: str, seed: int, epochs: int | None) -> dict:
    """MCLoss on one FunCat set: temperature fitted on valid logits, per-node thresholds tuned on
    the calibrated valid probabilities, hierarchical scores of the test split."""
    splits = load_splits(data_dir, dataset, merge_valid=False, seed=seed)
    model = train_model(splits, HMCSettings(epochs=epochs), dataset, seed, progress=False)
    h = splits.hierarchy
    with torch.no_grad():
        valid_logits, test_logits = model(splits.x_valid), model(splits.x_test)

    def probs_at(logits: torch.Tensor):
        return lambda t: model.predict_from_logits(logits / t)

    y_valid, y_test = splits.y_valid, splits.y_test
    m_valid, m_test = train_mask(splits, len(y_valid)), train_mask(splits, len(y_test))
    t, _ = choose_temperature("temperature", probs_at(valid_logits), y_valid, m_valid, h, dataset)
    valid = probs_at(valid_logits)(t)
    cols = eval_columns(h, splits.exclude)
    threshold = tune_rule("per-node", valid, y_valid, m_valid, h, columns=cols)
    raw, calibrated = probs_at(test_logits)(1.0), probs_at(test_logits)(t)
    scores = hierarchical_scores(calibrated, raw, y_test, m_test, h, threshold)
    return {"set": f"hmc/{dataset}", "start": "mcloss", "seed": seed, "temperature": t, **scores}


def summarise(rows: list[dict]) -> list[str]:
    """Markdown: mean ± std over seeds per (set, start) of each rule's hop distance, hF, ECE."""
    head = (
        ["set", "start", "n"]
        + [f"hops {r}" for r in LABEL_RULES]
        + COLUMNS
        + ["default vs threshold", "p"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["set"], r["start"]), []).append(r)
    for (name, start), rs in groups.items():
        cells = [name, start, str(len(rs))]
        for rule in LABEL_RULES:
            vals = [r["hop_distance_by_rule"].get(rule) for r in rs]
            cells.append(_mean_std([v for v in vals if v is not None]))
        cells += [_mean_std([r[c] for r in rs]) for c in COLUMNS]
        hops = [r["hop_distance_by_rule"] for r in rs]
        diff = [d["expected-hops"] - d["threshold"] for d in hops if "expected-hops" in d]
        cells.append(_mean_std(diff, signed=True) if diff else "DAG: threshold")
        cells.append(f"{sign_flip_p(diff):.3f}" if diff else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _mean_std(values: list[float], signed: bool = False) -> str:
    if not values:
        return "—"
    fmt = "{:+.3f}" if signed else "{:.3f}"
    return f"{fmt.format(np.mean(values))} ± {np.std(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--ssl-export", help="a stage-1 export to probe beside random init")
    parser.add_argument("--hmc-dir", default=os.environ.get("HMC_DATA_DIR"))
    parser.add_argument("--hmc-datasets", default=FUNCAT, help="default: the 7 FunCat sets")
    parser.add_argument("--hmc-epochs", type=int, help="override the protocol's epochs (faster)")
    parser.add_argument("--no-sample", action="store_true", help="only the HMC sets")
    parser.add_argument("--merge", action="store_true", help="keep the .jsonl's other sets' rows")
    parser.add_argument("--out", default=str(ROOT / "bench/results/label_rules.md"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    if not args.no_sample:
        with tempfile.TemporaryDirectory() as tmp:
            rows += sample_rows(seeds, args.ssl_export, Path(tmp))
    if args.hmc_dir:
        for ds in args.hmc_datasets.split(","):
            rows += [hmc_row(args.hmc_dir, ds, s, args.hmc_epochs) for s in seeds]
    jsonl = Path(args.out).with_suffix(".jsonl")
    if args.merge and jsonl.is_file():
        made = {_family(r["set"]) for r in rows}
        kept = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
        rows = [r for r in kept if _family(r["set"]) not in made] + rows
    write_results(rows, Path(args.out), " ".join(["python", *sys.argv]))


def _family(name: str) -> str:
    """The unit a run remakes: `sample` (all its heads) or one HMC set."""
    return "sample" if name.startswith("sample/") else name


def write_results(rows: list[dict], out: Path, command: str) -> None:
    """The markdown table (printed too) and the rows as JSON lines beside it."""
    lines = [
        "# Label rules and calibration (`bench/label_rules.py`)",
        "",
        f"command: `{command}`; hops: mean hop distance of each rule's label "
        "(lower is better); ECE over known node marginals, before (uncalibrated) and after "
        "temperature; `default vs threshold`: expected-hops minus threshold per seed, mean ± std "
        "(negative: the default is better), and `p` its two-sided sign-flip p over seeds.",
        "",
        *summarise(rows),
    ]
    print("\n".join(lines))
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".jsonl").write_text(
        "".join(
            json.dumps({k: v for k, v in r.items() if "reliability" not in k}) + "\n" for r in rows
        )
    )


if __name__ == "__main__":
    main()
