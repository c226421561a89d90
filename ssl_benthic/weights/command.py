"""`ssl-benthic export` and `import-weights`: their flags (the runs are `export.py` and
`import_weights.py`, imported only when the command runs: they need torch)."""

from __future__ import annotations

import argparse

__all__ = ["add_export", "add_import_weights"]


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a checkpoint's backbone as timm safetensors + JSON")
    p.add_argument("checkpoint", help="a pretraining checkpoint (.ckpt)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an export already in --out")
    p.set_defaults(handler="ssl_benthic.weights.export:cli_export")


def add_import_weights(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-weights",
        help="import a published encoder (BenthicNet, solo-learn, DINO, torchvision, timm) as an export",
    )
    p.add_argument(
        "checkpoint",
        nargs="?",
        help="weights file (.ckpt/.pth/.pt/.safetensors) or a folder with one",
    )
    p.add_argument("--out", help="output folder for backbone.safetensors + backbone.json")
    p.add_argument(
        "--branch",
        choices=("backbone", "momentum_backbone", "teacher", "student"),
        help="the encoder of a training checkpoint to import (default: the preset's, else the "
        "evaluated one: backbone, or teacher for DINO)",
    )
    p.add_argument("--preset", help="a published encoder's settings (see --list-presets)")
    p.add_argument(
        "--list-presets", action="store_true", help="list the presets (also --preset help)"
    )
    p.add_argument("--timm-name", help="the timm model, when the keys cannot tell it")
    p.add_argument(
        "--model-kwargs",
        help="timm model kwargs as JSON, e.g. '{\"num_heads\": 12}' (a ViT-S needs its head count)",
    )
    p.add_argument("--mean", type=float, nargs=3, help="pretraining normalisation mean (R G B)")
    p.add_argument("--std", type=float, nargs=3, help="pretraining normalisation std (R G B)")
    p.add_argument(
        "--img-size",
        type=int,
        help="build a ViT for this image size (position embeddings resampled from the release's)",
    )
    p.add_argument(
        "--clip-projection",
        action="store_true",
        help="open_clip files: import the projected CLIP embedding, not the trunk's feature",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an export already in --out")
    p.set_defaults(handler="ssl_benthic.weights.import_weights:cli_import_weights")
