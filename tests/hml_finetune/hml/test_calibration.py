"""Temperature scaling: recovers the temperature data were drawn with, minimises the masked BCE
(against a grid search), keeps T = 1 for 'none' and for a head without enough positives."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hml_finetune.hml.calibration import choose_temperature, fit_temperature, masked_bce
from hml_finetune.hml.hierarchy import Hierarchy

H = Hierarchy.from_paths(["[C] > a", "[C] > b"])


def drawn(true_t: float, n: int = 4000, seed: int = 0):
    """Logits z and targets drawn as Bernoulli(sigmoid(z / true_t)); the root always positive."""
    g = torch.Generator().manual_seed(seed)
    z = 3 * torch.randn(n, len(H), generator=g, dtype=torch.float64)
    y = (
        torch.rand(n, len(H), generator=g, dtype=torch.float64) < torch.sigmoid(z / true_t)
    ).float()
    y[:, H.index["[C]"]] = 1.0
    return z, y, torch.ones_like(y)


def test_masked_bce_by_hand():
    p = torch.tensor([[0.8, 0.3], [0.5, 0.9]])
    y = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    m = torch.tensor([[1.0, 1.0], [0.0, 1.0]])  # (1, 0) unknown
    want = -(math.log(0.8) + math.log(0.7) + math.log(0.1)) / 3
    assert masked_bce(p, y, m) == pytest.approx(want)


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_recovers_the_temperature_of_the_data(true_t):
    z, y, m = drawn(true_t)
    t = fit_temperature(lambda T: torch.sigmoid(z / T), y, m, torch.tensor([1, 2]))
    assert t == pytest.approx(true_t, rel=0.1)


def test_fitted_temperature_beats_every_grid_value_on_the_masked_loss():
    z, y, m = drawn(1.7, n=500, seed=3)
    m[::3, 1] = 0.0  # unknown entries: not in the loss
    y[::3, 1] = 1 - y[::3, 1]  # flipped where unknown: would move T if counted
    cols = torch.tensor([1, 2])
    t = fit_temperature(lambda T: torch.sigmoid(z / T), y, m, cols)
    best = masked_bce(torch.sigmoid(z / t)[:, cols], y[:, cols], m[:, cols])
    for g in np.exp(np.linspace(math.log(0.05), math.log(20), 400)):
        assert best <= masked_bce(torch.sigmoid(z / g)[:, cols], y[:, cols], m[:, cols]) + 1e-9


def test_none_and_too_few_positives_keep_one():
    z, y, m = drawn(2.0, n=50)
    assert choose_temperature("none", lambda T: torch.sigmoid(z / T), y, m, H, "c") == (1.0, "none")
    y[:, 1:] = 0.0  # no positive below the root
    with pytest.warns(UserWarning, match="temperature 1"):
        t, why = choose_temperature("temperature", lambda T: torch.sigmoid(z / T), y, m, H, "c")
    assert t == 1.0 and why.startswith("none:")
    with pytest.raises(ValueError, match="calibration"):
        choose_temperature("platt", lambda T: z, y, m, H, "c")
