"""The Lightning Trainer keys both stages share: `trainer.*` of a pretraining recipe and of a
fine-tuning recipe subclass this one dataclass, so a key that works in one stage works in the other.

Each stage adds its own keys (pretraining: steps, gradient accumulation and clipping, checkpoints
every N steps, channels-last; fine-tuning: checkpoints every N epochs, TensorBoard) and may change
a default (epochs, logging interval). Torch-free, as every config module.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SharedTrainerConfig"]


@dataclass
class SharedTrainerConfig:
    """pl.Trainer options of the same name: where and how it runs, how long, how often it logs,
    and whether it draws a progress bar (off for batch jobs whose logs are files)."""

    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    max_epochs: int = 100
    log_every_n_steps: int = 50
    enable_progress_bar: bool = True
