"""Reading a foreign or published weights file into one flat set of tensors, and choosing the
branch (the encoder) to import: solo-learn / Lightning (`backbone.*`, `momentum_backbone.*`), DINO
(`teacher` / `student` dicts), MoCo (`base_encoder.*`, `encoder_q.*` ...), plain state dicts,
safetensors, and this toolkit's own checkpoints. Always `torch.load(weights_only=True)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from ssl_benthic.core.errors import BackboneError
from ssl_benthic.weights.load import pretrain_metadata, torch_load
from ssl_benthic.weights.preset_record import Preset

__all__ = [
    "BRANCHES",
    "BRANCH_PREFIXES",
    "Source",
    "read_source",
    "branch_prefixes",
    "split_branch",
]

WEIGHT_SUFFIXES = (".ckpt", ".pth", ".pt", ".bin", ".safetensors")

# branch -> key prefixes that hold it, first match wins (after `module.` is removed)
BRANCH_PREFIXES: dict[str, tuple[str, ...]] = {
    "backbone": ("backbone.", "base_encoder.", "encoder_q."),
    "momentum_backbone": (
        "momentum_backbone.",
        "teacher_backbone.",
        "momentum_encoder.",
        "encoder_k.",
    ),
    "teacher": ("teacher.backbone.", "teacher.", "teacher_backbone.", "momentum_backbone."),
    "student": ("student.backbone.", "student.", "backbone."),
}
BRANCHES = tuple(BRANCH_PREFIXES)
DINO_RENAMES = {"register_tokens": "reg_token"}  # DINOv2's name -> timm's
NOT_BACKBONE = ("mask_token",)  # training-only tensors inside a backbone (DINOv2, iBOT)


@dataclass
class Source:
    """A weights file, flattened: every tensor under its path of keys (`module.` removed)."""

    path: Path
    kind: str
    tensors: dict[str, Tensor]
    info: dict[str, Any] = field(default_factory=dict)  # epoch, global_step when present
    ssl_meta: dict[str, Any] | None = None  # this toolkit's own checkpoint: its recipe
    nested: bool = False  # teacher / student dicts (DINO)


def _weights_file(path: Path) -> Path:
    """`path`, or the one weights file in folder `path` (a Hugging Face download)."""
    if path.is_file():
        return path
    if not path.exists():
        raise BackboneError(f"weights file not found: {path}")
    found = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or f"no {'/'.join(WEIGHT_SUFFIXES)} file"
        raise BackboneError(
            f"{path}: expected one weights file in the folder, found {names}: name it"
        )
    return found[0]


def _strip_module(key: str) -> str:
    """A key without DistributedDataParallel's `module.` wrapper."""
    return key.removeprefix("module.")


def _tensors(obj: dict[str, Any], path: Path, where: str) -> dict[str, Tensor]:
    """The tensors of a state dict, `module.` removed; anything else in it is refused."""
    bad = [k for k, v in obj.items() if not torch.is_tensor(v)]
    if bad:
        raise BackboneError(
            f"{path}: {where} holds non-tensor entries ({', '.join(map(str, bad[:5]))})"
        )
    return {_strip_module(k): v for k, v in obj.items()}


def read_source(path: str | Path) -> Source:
    """Read a weights file (or the one in a folder) into a flat `Source`."""
    path = _weights_file(Path(path))
    if path.suffix == ".safetensors":
        try:
            return Source(
                path, "safetensors", {_strip_module(k): v for k, v in load_file(str(path)).items()}
            )
        except SafetensorError as exc:
            raise BackboneError(f"{path}: not a readable safetensors file ({exc})") from None
    obj = torch_load(path)
    if not isinstance(obj, dict):
        raise BackboneError(
            f"{path}: expected a dict of tensors or a checkpoint, found {type(obj).__name__}"
        )
    info = {k: obj[k] for k in ("epoch", "global_step") if isinstance(obj.get(k), int)}
    if "ssl_benthic" in obj and "state_dict" in obj:
        state = _tensors(obj["state_dict"], path, "state_dict")
        return Source(path, "ssl-benthic checkpoint", state, info, pretrain_metadata(obj, path))
    if isinstance(obj.get("teacher"), dict) or isinstance(obj.get("student"), dict):
        flat = {
            f"{name}.{k}": v
            for name in ("teacher", "student")
            if isinstance(obj.get(name), dict)
            for k, v in _tensors(obj[name], path, name).items()
        }
        return Source(path, "DINO checkpoint (teacher / student)", flat, info, nested=True)
    for container in ("state_dict", "model"):
        if isinstance(obj.get(container), dict):
            kind = "Lightning checkpoint" if "pytorch-lightning_version" in obj else "checkpoint"
            state = _tensors(obj[container], path, container)
            return Source(path, f"{kind} ('{container}')", state, info)
    if obj and all(torch.is_tensor(v) for v in obj.values()):
        return Source(path, "state dict", _tensors(obj, path, "the file"))
    raise BackboneError(
        f"{path}: no state dict found (top-level keys: {', '.join(map(str, list(obj)[:8]))})"
    )


def branch_prefixes(source: Source) -> dict[str, str]:
    """The branches the file has: branch -> the key prefix that holds it."""
    found = {}
    for branch, prefixes in BRANCH_PREFIXES.items():
        hit = next((p for p in prefixes if any(k.startswith(p) for k in source.tensors)), None)
        if hit is not None:
            found[branch] = hit
    return found


def _default_branch(source: Source, present: dict[str, str], preset: Preset | None) -> str:
    """The branch to import when none is asked for: the preset's, else the method's evaluated one."""
    if preset is not None and preset.branch in present:
        return preset.branch
    if preset is not None and preset.branch:
        raise BackboneError(
            f"{source.path}: preset '{preset.name}' imports branch '{preset.branch}', the file "
            f"has {_list_branches(present)}: pass --branch"
        )
    order = ("teacher", "student") if source.nested else ("backbone", "student", "teacher")
    return next(b for b in (*order, *BRANCHES) if b in present)


def _list_branches(present: dict[str, str]) -> str:
    """`backbone (backbone.*), momentum_backbone (momentum_backbone.*)` for messages."""
    return ", ".join(f"{b} ({p}*)" for b, p in present.items())


def split_branch(
    source: Source, branch: str | None, preset: Preset | None
) -> tuple[str | None, str, dict[str, Tensor], dict[str, Tensor], list[str]]:
    """(branch, prefix, its tensors without the prefix, the tensors of no backbone, notes)."""
    present = branch_prefixes(source)
    if not present:
        if branch is not None:
            raise BackboneError(
                f"{source.path}: one plain state dict, no '{branch}' branch: leave out --branch"
            )
        return None, "", dict(source.tensors), {}, []
    if branch is None:
        branch = _default_branch(source, present, preset)
    if branch not in present:
        raise BackboneError(
            f"{source.path}: no '{branch}' branch ({', '.join(BRANCH_PREFIXES.get(branch, ()))}*); "
            f"the file has {_list_branches(present)}"
        )
    prefix = present[branch]
    encoders = set(present.values())
    state = {k[len(prefix) :]: v for k, v in source.tensors.items() if k.startswith(prefix)}
    rest = {k: v for k, v in source.tensors.items() if not any(k.startswith(p) for p in encoders)}
    notes = []
    for other in sorted(encoders - {prefix}):
        n = sum(k.startswith(other) for k in source.tensors)
        name = next(b for b, p in present.items() if p == other)
        notes.append(f"not imported: {other}* ({n} tensors; --branch {name} imports it)")
    return branch, prefix, state, rest, notes
