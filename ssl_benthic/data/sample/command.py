"""`ssl-benthic make-sample` and `make-survey`: their flags (the runs are `make_sample.py` and
`make_survey.py`, imported only when the command runs)."""

from __future__ import annotations

import argparse

__all__ = ["add_make_sample", "add_make_survey"]


def add_make_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "make-sample", help="draw the synthetic seafloor sample and write it as shards"
    )
    p.add_argument(
        "--out", required=True, help="output folder (one sub-folder of shards per split)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-unlabelled", type=int, default=2000, help="images in the unlabelled split")
    p.add_argument("--n-labelled", type=int, default=1200, help="images in train+val+test")
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument(
        "--shallow-fraction",
        type=float,
        default=0.2,
        help="share of labelled images annotated only to a shallower level",
    )
    p.add_argument(
        "--unannotated-fraction",
        type=float,
        default=0.1,
        help="share of labelled images that leave one head unannotated",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a non-empty --out (only once the new sample is complete)",
    )
    p.set_defaults(handler="ssl_benthic.data.sample.make_sample:cli_make_sample")


def add_make_survey(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "make-survey",
        help="draw a small point-annotated survey (photos + CoralNet export) to try the workflow",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-images", type=int, default=60, help="photographs")
    p.add_argument("--size", type=int, default=128, help="photograph side in pixels")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.set_defaults(handler="ssl_benthic.data.sample.make_survey:cli_make_survey")
