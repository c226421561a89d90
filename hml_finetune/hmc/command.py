"""`hml-finetune hmc`: its flags (the run is `run.py`, imported only when the command runs)."""

from __future__ import annotations

import argparse

from hml_finetune.hml.loss_names import LOSSES, MEASURES

__all__ = ["add_hmc"]


def add_hmc(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hmc", help="train and score on an HMC ARFF dataset (C-HMCNN protocol)")
    p.add_argument(
        "--data-dir", default=None, help="folder of the ARFF files (default: $HMC_DATA_DIR)"
    )
    p.add_argument("--dataset", required=True, help="e.g. cellcycle_FUN, Diatoms, Enron, ImCLEF07A")
    p.add_argument("--loss", default="mcloss", choices=LOSSES)
    p.add_argument(
        "--measure", default="gmu", choices=MEASURES, help="uncertainty for focal losses"
    )
    p.add_argument("--heads", type=int, default=1, help="ensemble heads sharing the input")
    p.add_argument("--weights", default="class-wise", choices=["class-wise", "binary"])
    p.add_argument(
        "--placement", default="reference", choices=["positive", "negative", "reference"]
    )
    p.add_argument(
        "--counting",
        default=None,
        choices=["own", "descendants"],
        help="node counts: each sample once per node (own) or summed over descendants",
    )
    p.add_argument("--omega", type=float, default=0.25, help="floor of the rescaled node weights")
    p.add_argument(
        "--threshold",
        default="per-node",
        help="per-node (default: tuned per node on valid; best macro F1 in bench/hmc.py), global, "
        "or a number such as 0.5 (the published protocol: train+valid, fixed threshold)",
    )
    p.add_argument(
        "--refit",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with a tuned threshold (default on): tune on valid with a model trained on train, then "
        "apply the thresholds to a model trained on train+valid with the same seed (the published "
        "protocol's model and AU(PRC)); --no-refit scores the train-only model, half the time",
    )
    p.add_argument("--seeds", default="0", help="e.g. 0-4 or 0,3,7")
    p.add_argument("--epochs", type=int, default=None, help="override the protocol's epoch count")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="seeds trained at once, one process and one thread each (on CPU: one per core)",
    )
    p.add_argument("--out", default="runs/hmc", help="folder for the CSV and the markdown summary")
    p.set_defaults(handler="hml_finetune.hmc.run:cli_hmc")
