"""One device picker for every command: what `auto`, `cpu`, `gpu`/`cuda` and `cuda:N` mean here.

A Lightning accelerator name (`trainer.accelerator`) and a torch device name (`--device`) both go
through these functions, so "auto" means the same thing in pretraining, fine-tuning, scoring,
inference and the HMC benchmark: the GPU when one is visible, else the CPU.
"""

from __future__ import annotations

import os

import torch

from ssl_benthic.core.errors import ConfigError

__all__ = ["on_gpu", "pick_device", "process_device"]

GPU_NAMES = ("gpu", "cuda")


def on_gpu(accelerator: str) -> bool:
    """Whether a Lightning accelerator name runs on a GPU here ('auto' does when one is visible)."""
    name = accelerator.split(":")[0]
    return name in GPU_NAMES or (name == "auto" and torch.cuda.is_available())


def pick_device(device: str = "auto") -> torch.device:
    """A torch device from a user's name: 'auto' is the GPU when there is one, else the CPU;
    asking for CUDA without a visible GPU is an error, never a silent fall back."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind, _, index = device.partition(":")
    if kind not in GPU_NAMES:
        return torch.device(device)
    if not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: no CUDA GPU is visible")
    return torch.device(f"cuda:{index}" if index else "cuda")


def process_device(accelerator: str) -> torch.device:
    """This process's device under a Lightning accelerator: LOCAL_RANK's GPU on GPU, else the CPU."""
    if on_gpu(accelerator) and torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")
