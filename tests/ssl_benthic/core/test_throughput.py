"""The throughput callback's arithmetic on a scripted clock: images/s and the data-wait share."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from ssl_benthic.core import trainer as trainer_mod
from ssl_benthic.core.trainer import Throughput


class FakeModule:
    device = torch.device("cpu")

    def __init__(self, ranks: list[float] | None = None) -> None:
        self.logged: list[dict] = []
        self.ranks = ranks

    def all_gather(self, t: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.ranks) if self.ranks is not None else t

    def log_dict(self, metrics: dict, **kwargs) -> None:
        self.logged.append(metrics)


def run(mp: pytest.MonkeyPatch, clock: list[float], module: FakeModule, world: int = 1) -> None:
    times = iter(clock)
    cb, trainer = Throughput(), SimpleNamespace(world_size=world)
    batch = (torch.zeros(8, 3, 4, 4), [{}] * 8)
    mp.setattr(trainer_mod.time, "perf_counter", lambda: next(times))
    cb.on_train_epoch_start(trainer, module)
    for i in range(len(clock) // 2):
        cb.on_train_batch_start(trainer, module, batch, i)
        cb.on_train_batch_end(trainer, module, None, batch, i)


def test_images_per_second_and_data_wait_from_the_clock(monkeypatch):
    module = FakeModule()
    # step 0: 0 -> 1 (not measured: the loader starts); step 1 waits 3 s, computes 1 s
    run(monkeypatch, [0.0, 1.0, 4.0, 5.0], module)
    assert module.logged == [{"images_per_s": 8 / 4, "data_wait": 0.75}]


def test_the_slowest_rank_is_data_wait_and_every_rank_is_logged(monkeypatch):
    module = FakeModule(ranks=[0.25, 0.5])
    run(monkeypatch, [0.0, 1.0, 2.0, 3.0], module, world=2)
    assert module.logged[0] == {"images_per_s": 16 / 2, "data_wait": 0.5}
    assert module.logged[1] == {"data_wait_rank0": 0.25, "data_wait_rank1": 0.5}
