"""The seven uncertainty measures on hand-picked head outputs, their range, and H = 1."""

import math

import pytest
import torch

from hml_finetune.hml.uncertainty import MEASURES, binary_entropy, uncertainty

H09 = -(0.9 * math.log2(0.9) + 0.1 * math.log2(0.1))  # 0.46900 bits


def heads(*values: float) -> torch.Tensor:
    """One (B=1, K=1) entry seen by len(values) heads -> (H, 1, 1)."""
    return torch.tensor(values, dtype=torch.float64).reshape(-1, 1, 1)


CASES = {
    # name: (agreeing 0.9/0.9, disagreeing 0.1/0.9, certain 1/1, fifty-fifty 0.5/0.5)
    "predictive": (H09, 1.0, 0.0, 1.0),
    "aleatoric": (H09, H09, 0.0, 1.0),
    "mutual_information": (0.0, 1.0 - H09, 0.0, 0.0),
    "epistemic_js": (0.0, 1.0 - H09, 0.0, 0.0),
    "epistemic_kl": (0.0, 1.0, 0.0, 0.0),  # KL(0.1||0.9) = 0.8 log2 9 = 2.54 bits, clipped
    "bma_margin": (0.2, 1.0, 0.0, 1.0),
    "gmu": (0.2, 1.0, 0.0, 1.0),  # s = 0 gates fully (u = bBMA); margin 0 gives u = 1
}


@pytest.mark.parametrize("name", list(MEASURES))
def test_hand_picked_values(name):
    agree, disagree, certain, fifty = CASES[name]
    tol = 1e-4
    assert uncertainty(name, heads(0.9, 0.9)).item() == pytest.approx(agree, abs=tol)
    assert uncertainty(name, heads(0.1, 0.9)).item() == pytest.approx(disagree, abs=tol)
    assert uncertainty(name, heads(1.0, 1.0)).item() == pytest.approx(certain, abs=tol)
    assert uncertainty(name, heads(0.5, 0.5)).item() == pytest.approx(fifty, abs=tol)


def test_gmu_gate_with_spread():
    # pbar 0.7, margin 0.4, s 0.1: g = 1 - e^-2, u = 1 - 0.4 g
    expect = 1 - 0.4 * (1 - math.exp(-2.0))
    assert uncertainty("gmu", heads(0.6, 0.8)).item() == pytest.approx(expect, abs=1e-5)


def test_js_three_heads_is_mean_over_pairs():
    def js(p, q):
        mid = torch.tensor((p + q) / 2)
        return (
            binary_entropy(mid)
            - (binary_entropy(torch.tensor(p)) + binary_entropy(torch.tensor(q))) / 2
        ).item()

    expect = (js(0.2, 0.5) + js(0.2, 0.9) + js(0.5, 0.9)) / 3
    assert uncertainty("epistemic_js", heads(0.2, 0.5, 0.9)).item() == pytest.approx(
        expect, abs=1e-6
    )


@pytest.mark.parametrize("name", list(MEASURES))
def test_range_and_single_head(name):
    g = torch.Generator().manual_seed(0)
    p = torch.rand(5, 7, 11, generator=g)
    p[0, 0] = 0.0
    p[:, 1] = 1.0
    u = uncertainty(name, p)
    assert u.shape == (7, 11)
    assert torch.isfinite(u).all() and (u >= 0).all() and (u <= 1).all()
    one = uncertainty(name, p[:1])
    assert one.shape == (7, 11) and torch.isfinite(one).all()
    assert (one >= 0).all() and (one <= 1).all()
    if name in ("mutual_information", "epistemic_js", "epistemic_kl"):
        assert torch.allclose(one, torch.zeros_like(one), atol=1e-5)


def test_single_head_gmu_equals_bma_margin():
    p = torch.tensor([0.1, 0.3, 0.7, 0.99]).reshape(1, 1, 4)
    torch.testing.assert_close(uncertainty("gmu", p), uncertainty("bma_margin", p))


def test_errors():
    with pytest.raises(ValueError, match="unknown uncertainty measure 'entropy'"):
        uncertainty("entropy", heads(0.5))
    with pytest.raises(ValueError, match=r"\(H, B, K\)"):
        uncertainty("predictive", torch.rand(3, 4))


def test_config_and_cli_name_exactly_the_implemented_measures():
    from hml_finetune.finetune.config import MEASURES as CONFIG_MEASURES

    assert tuple(CONFIG_MEASURES) == tuple(MEASURES)
