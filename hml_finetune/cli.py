"""The `hml-finetune` command: the HMC benchmark protocol, image fine-tuning, evaluation, comparison."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hml_finetune.compare.share import parse_share
from hml_finetune.finetune.config import LOSSES, MEASURES
from hml_finetune.predict.outputs import writer_help, writers
from ssl_benthic.cli import add_debug_flag, add_run_flags, run_handler, split_debug
from ssl_benthic.data.points import add_format_flags, add_input_flags


def _add_hmc(sub: argparse._SubParsersAction) -> None:
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


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="fine-tune or linear-probe HML heads on labelled image shards")
    p.add_argument("--config", required=True, help="YAML recipe under configs/finetune/")
    add_run_flags(p)
    p.set_defaults(handler="hml_finetune.finetune.train:cli_train")


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score a fine-tuned checkpoint on labelled shards")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--shards", required=True, help="labelled shard folder")
    p.add_argument("--out", default=None, help="where to write metrics JSON and markdown")
    p.set_defaults(handler="hml_finetune.finetune.evaluate:cli_evaluate")


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="label new images with a fine-tuned model (CSV or JSON lines)"
    )
    p.add_argument("--checkpoint", required=True, help="model.ckpt of `hml-finetune train`")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="a folder (searched recursively), an image file or a glob")
    src.add_argument("--shards", help="a shard folder (e.g. made by make-shards)")
    add_input_flags(src)
    p.add_argument(
        "--images-root",
        help="where the photographs of a point export are (default: the export's folder)",
    )
    add_format_flags(p, reads_only=True)
    p.add_argument(
        "--patch",
        type=int,
        default=None,
        help="patch side in pixels (default: the training patches', from model.ckpt, else 224)",
    )
    p.add_argument(
        "--resize",
        type=int,
        default=None,
        help="resize patches to this side (0: no; default: as the training patches were)",
    )
    p.add_argument("--out", required=True, help="the file to write")
    p.add_argument("--format", default="csv", choices=sorted(writers()), help=writer_help())
    p.add_argument("--top-k", type=int, default=5, help="most probable leaves listed per head")
    p.add_argument(
        "--label-rule",
        default=None,
        help="expected-hops, threshold or min-probability (default: the recipe's "
        "predict.label_rule; DAG schemes use threshold)",
    )
    p.add_argument(
        "--min-probability",
        type=float,
        default=None,
        help="min-probability rule: the least probability of the label (default: the recipe's)",
    )
    p.add_argument("--cover", default=None, help="write percent cover per image (points) here")
    p.add_argument("--cover-by", default=None, help="also per group of this export column")
    p.add_argument(
        "--cover-depth", type=int, action="append", help="a depth to report (repeat; default all)"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=4, help="loader processes decoding images")
    p.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda")
    p.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
    p.set_defaults(handler="hml_finetune.predict.run:cli_predict")


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="grid of starting points x modes x losses x seeds, with a report"
    )
    p.add_argument("--config", required=True, help="e.g. configs/finetune/compare_sample.yaml")
    p.add_argument(
        "--cells",
        type=parse_share,
        default=None,
        metavar="I/N",
        help="run the I-th of N shares of the cells (one task of a job array; the task that "
        "finishes the last cell writes the report)",
    )
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    p.set_defaults(handler="hml_finetune.compare.run:cli_compare")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hml-finetune", description=__doc__.splitlines()[0])
    add_debug_flag(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_hmc, _add_train, _add_evaluate, _add_predict, _add_compare):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, debug = split_debug(argv)
    return run_handler(build_parser().parse_args(args), debug)


if __name__ == "__main__":
    sys.exit(main())
