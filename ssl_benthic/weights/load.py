"""Backbone weights from a file, whatever wrote it: a stage-1 export (folder, or .safetensors with its
.json), an ssl-benthic pretraining checkpoint (its student backbone, as `export` writes it), or a
plain state dict (.safetensors, .pt/.pth, optionally under a `state_dict` key). The export folder's
format lives here, reader and writer both (`export` and `import-weights` write through it).

Loading is strict: weights that do not fill every key of the timm model, or carry keys it does not
have, fail naming them, so a mismatch can never train from random init under another start's name.
A classifier the backbone drops (`fc.*`, `head.*` of an ImageNet file) is the one exception.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ssl_benthic.core.errors import BackboneError
from ssl_benthic.core.paths import sha256_file

log = logging.getLogger(__name__)

__all__ = [
    "EXPORT_WEIGHTS",
    "EXPORT_META",
    "STUDENT_PREFIX",
    "read_export",
    "write_export_files",
    "torch_load",
    "read_state",
    "student_backbone_state",
    "pretrain_metadata",
    "load_strict",
    "weights_identity",
]

EXPORT_WEIGHTS = "backbone.safetensors"
EXPORT_META = "backbone.json"
STUDENT_PREFIX = "backbone."
SHOWN = 5  # keys named in an error before "and N more"


def torch_load(path: Path, mmap: bool = False) -> Any:
    """`torch.load(weights_only=True)`; a pickled Python object is refused, naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - pickle, zip or format errors: one message each
        text = str(exc)
        if "Weights only load failed" in text and (m := re.search(r"GLOBAL ([\w.]+)", text)):
            raise BackboneError(
                f"{path}: refused: the file holds a pickled Python object ({m.group(1)}), not "
                "only tensors, and unpickling it could run code; if you trust the file, re-save "
                "its state dicts (torch.save(ckpt['state_dict'], ...) or safetensors) and import that"
            ) from None
        detail = re.search(r"WeightsUnpickler error: *\n*(.+)", text)
        first = detail.group(1) if detail else (text.strip().splitlines() or [""])[0]
        raise BackboneError(
            f"{path}: not a readable weights file, corrupt or of another format "
            f"({type(exc).__name__}: {first.strip()})"
        ) from None


def _pretraining_checkpoint(path: Path) -> dict[str, Any] | None:
    """The loaded checkpoint when `path` is an ssl-benthic pretraining checkpoint, else None."""
    if path.suffix != ".ckpt":
        return None
    ckpt = torch_load(path, mmap=True)  # the metadata, without reading every tensor
    return ckpt if isinstance(ckpt, dict) and "ssl_benthic" in ckpt else None


def student_backbone_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The student backbone's tensors of a pretraining state dict (`backbone.*`, prefix removed)."""
    n = len(STUDENT_PREFIX)
    return {k[n:]: v for k, v in state_dict.items() if k.startswith(STUDENT_PREFIX)}


def pretrain_metadata(ckpt: dict[str, Any], path: Path) -> dict[str, Any]:
    """What an export's JSON says about a pretraining checkpoint: architecture, normalisation, step."""
    info = ckpt["ssl_benthic"]
    cfg = info["config"]
    return {
        "timm_name": info["timm_name"],
        "img_size": cfg["transform"]["input_size"],
        "mean": list(cfg["transform"]["mean"]),
        "std": list(cfg["transform"]["std"]),
        "method": info["method"],
        "step": int(ckpt.get("global_step", 0)),
        "epoch": int(ckpt.get("epoch", 0)),
        "model_kwargs": info.get("model_kwargs", {}),
        "source_checkpoint": str(path),
        "config": cfg,
    }


def write_export_files(
    out: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any], weights: str = EXPORT_WEIGHTS
) -> None:
    """The export folder's one writer: `weights` (safetensors, tensors made contiguous without a
    second copy of a contiguous model) and its metadata beside it (`backbone.json` for the backbone)."""
    out.mkdir(parents=True, exist_ok=True)
    contiguous = {k: v.detach().contiguous() for k, v in tensors.items()}
    save_file(contiguous, str(out / weights), metadata={"format": "pt"})
    (out / Path(weights).with_suffix(".json").name).write_text(json.dumps(meta, indent=2) + "\n")


def read_export(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """(weights file, metadata) of a weights source: an export folder, a .safetensors with its
    .json, a pretraining checkpoint (metadata from its recipe), or a plain weights file ({})."""
    path = Path(path)
    if path.is_dir():
        weights, meta_path = path / EXPORT_WEIGHTS, path / EXPORT_META
    else:
        weights, meta_path = path, path.with_suffix(".json")
    if not weights.is_file():
        raise BackboneError(f"weights file not found: {weights}")
    if (ckpt := _pretraining_checkpoint(weights)) is not None:
        return weights, pretrain_metadata(ckpt, weights)
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return weights, meta


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file; of a pretraining checkpoint, its student backbone's."""
    if path.suffix == ".safetensors":
        return load_file(str(path))
    state = torch_load(path)
    if isinstance(state, dict) and "ssl_benthic" in state:
        return student_backbone_state(state["state_dict"])
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise BackboneError(f"{path}: expected a state dict of tensors")
    return state


def _named(keys: list[str]) -> str:
    more = f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
    return ", ".join(keys[:SHOWN]) + more


def _classifier_keys(model: nn.Module, keys: list[str]) -> list[str]:
    """Keys of the classifier a `num_classes=0` timm backbone dropped (e.g. `fc.weight`)."""
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return [k for k in keys if any(k.startswith(f"{n}.") for n in names)]


def _hint(unexpected: list[str]) -> str:
    prefixes = {k.split(".", 1)[0] for k in unexpected}
    if prefixes & {"backbone", "momentum_backbone", "teacher", "student", "projector", "model"}:
        return (
            " (this looks like a training checkpoint, not backbone weights: run "
            "`ssl-benthic import-weights FILE --out DIR` and use DIR; for this toolkit's own "
            "checkpoints `ssl-benthic export` does the same)"
        )
    return ""


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` into `model` with every key matched: a shape mismatch, a missing key or an
    unexpected key (other than a dropped classifier) raises, naming the keys."""
    own = model.state_dict()
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise BackboneError(
                f"{source}: shape mismatch at '{key}': file has {tuple(value.shape)}, "
                f"model has {tuple(own[key].shape)}"
            )
    extra = [k for k in state if k not in own]
    dropped = _classifier_keys(model, extra)
    if dropped:
        log.info("%s: classifier not part of the backbone, left out: %s", source, _named(dropped))
    unexpected = [k for k in extra if k not in dropped]
    missing = [k for k in own if k not in state]
    if missing or unexpected:
        parts = [f"missing {len(missing)} keys ({_named(missing)})"] if missing else []
        parts += [f"unexpected {len(unexpected)} keys ({_named(unexpected)})"] if unexpected else []
        raise BackboneError(
            f"{source}: the weights do not fit the model: {'; '.join(parts)}{_hint(unexpected)}"
        )
    model.load_state_dict({k: v for k, v in state.items() if k not in dropped}, strict=True)


def weights_identity(weights: str, weights_file: str | None) -> dict[str, Any]:
    """Which weights a start used, for results and reports: {source, file, sha256} (file and
    sha256 None for random init, and for ImageNet weights fetched by timm from the hub)."""
    if weights == "random" or (weights == "imagenet" and weights_file is None):
        return {"source": weights, "file": None, "sha256": None}
    path = Path(weights_file) if weights == "imagenet" else read_export(weights)[0]
    return {"source": weights, "file": str(path), "sha256": sha256_file(path)}
