"""Continue pretraining from an import: start the method's heads from the ones the import kept.

`ssl-benthic import-weights` keeps a checkpoint's projector / predictor tensors in
`DIR/heads.safetensors` (their original key names). When a recipe starts from that import
(`backbone.weights: DIR`), is the same method, and `method.init_heads` is `import` (the default), each
head the method maps (`SSLMethod.head_import`: source key prefix -> `attribute[.sub.path]`) starts
from those tensors when every key and shape matches; otherwise it starts fresh, with the reason.

A Linear's bias that the target lacks because a BatchNorm follows (solo-learn's projector has one,
lightly's does not) is folded into that BatchNorm's running mean: in training the batch statistics
remove the bias anyway, and in eval mode the outputs are identical.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from ssl_benthic.weights.import_weights import HEADS_WEIGHTS
from ssl_benthic.weights.load import EXPORT_META

__all__ = ["method_key", "init_heads_from_import"]


def method_key(name: str | None) -> str:
    """`Barlow Twins` -> `barlowtwins`, `MoCo v3` -> `mocov3`: method names compared loosely."""
    return re.sub(r"[^a-z0-9]", "", (name or "").lower())


def _import_files(weights: str) -> tuple[dict[str, Tensor], str | None] | None:
    """(head tensors, the import's method) of an import folder with a heads file, else None."""
    folder = Path(weights)
    if not (folder / HEADS_WEIGHTS).is_file():
        return None
    meta_file = folder / EXPORT_META
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    return load_file(str(folder / HEADS_WEIGHTS)), meta.get("method")


def _fold_bias(target: dict[str, Tensor], key: str, value: Tensor) -> bool:
    """Fold `...layers.{i}.bias` into `...layers.{i+1}.running_mean` when the target has a
    bias-free Linear followed by a BatchNorm there; True when folded."""
    m = re.fullmatch(r"(.*\.)(\d+)\.bias", key)
    if m is None:
        return False
    bn = f"{m.group(1)}{int(m.group(2)) + 1}.running_mean"
    if bn not in target or target[bn].shape != value.shape:
        return False
    target[bn] = target[bn] - value
    return True


def _mapped(tensors: dict[str, Tensor], source: str, into: str) -> dict[str, Tensor]:
    """The tensors under `source`, renamed to keys of the head module (`into` = its sub-path)."""
    n = len(source)
    return {into + k[n:]: v for k, v in tensors.items() if k.startswith(source)}


def _load_head(head: nn.Module, mapped: dict[str, Tensor]) -> str | None:
    """Load `mapped` (the head's own keys) into `head`, strictly; the reason it cannot, or None."""
    state = {k: v.clone() for k, v in head.state_dict().items()}
    extra = {k: v for k, v in mapped.items() if k not in state}
    for key, value in mapped.items():
        if key in state and state[key].shape != value.shape:
            return f"{key} {tuple(value.shape)} does not fit the recipe's head"
        if key in state:
            state[key] = value
    for key, value in extra.items():  # after the running means they fold into are set
        if not _fold_bias(state, key, value):
            return f"{key} {tuple(value.shape)} does not fit the recipe's head"
    counters = {k for k in state if k.endswith("num_batches_tracked")}
    missing = sorted(set(state) - set(mapped) - counters)
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        return f"the import lacks {missing[0]}{more}"
    head.load_state_dict(state, strict=True)
    return None


@torch.no_grad()
def init_heads_from_import(
    method: nn.Module, weights: str, policy: str, head_import: dict[str, str], name: str
) -> list[str]:
    """Start the method's heads from the import's, where they fit; one report line per head."""
    found = _import_files(weights) if weights not in ("random", "imagenet") else None
    if found is None:
        return []
    tensors, source_method = found
    if policy == "fresh":
        return ["heads: fresh (method.init_heads: fresh)"]
    if method_key(source_method) != method_key(name):
        return [f"heads: fresh (the import's heads are {source_method or 'of an unknown method'})"]
    lines = []
    for source, target in head_import.items():
        attr, _, into = target.partition(".")
        mapped = _mapped(tensors, source, f"{into}." if into else "")
        if not mapped:
            continue
        reason = _load_head(getattr(method, attr), mapped)
        if reason is None:
            lines.append(f"heads: {attr} from the import's {source}* ({len(mapped)} tensors)")
        else:
            lines.append(f"heads: {attr} fresh ({reason})")
    return lines or ["heads: fresh (the import holds no head this method maps)"]
