"""Per-entry uncertainty of an ensemble of H heads: probabilities (H, B, K) -> u (B, K) in [0, 1].

pbar = mean_h p^h, s = std_h p^h (population std, so 0 for H = 1), H2 = binary entropy in bits.
Probabilities are clamped to [eps, 1 - eps] before any log, so every measure is finite for H = 1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

EPS = 1e-6


def _shape(probs: torch.Tensor) -> torch.Tensor:
    if probs.dim() != 3:
        raise ValueError(f"expected head probabilities (H, B, K), got shape {tuple(probs.shape)}")
    return probs


def _check(probs: torch.Tensor) -> torch.Tensor:
    return _shape(probs).clamp(EPS, 1 - EPS)


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """H2(p) = -p log2 p - (1 - p) log2 (1 - p), p clamped away from 0 and 1."""
    p = p.clamp(EPS, 1 - EPS)
    return -(p * torch.log2(p) + (1 - p) * torch.log2(1 - p))


def predictive(probs: torch.Tensor) -> torch.Tensor:
    """H2(pbar): total uncertainty."""
    return binary_entropy(_check(probs).mean(0)).clamp(0, 1)


def aleatoric(probs: torch.Tensor) -> torch.Tensor:
    """mean_h H2(p^h): expected entropy of the heads."""
    return binary_entropy(_check(probs)).mean(0).clamp(0, 1)


def mutual_information(probs: torch.Tensor) -> torch.Tensor:
    """predictive - aleatoric (>= 0 by concavity; clamped against rounding)."""
    return (predictive(probs) - aleatoric(probs)).clamp(0, 1)


def _pairs(H: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.triu_indices(H, H, offset=1)


def epistemic_js(probs: torch.Tensor) -> torch.Tensor:
    """Mean over head pairs of JS(P, Q) = H2((P + Q) / 2) - (H2(P) + H2(Q)) / 2, in bits."""
    p = _check(probs)
    if p.shape[0] < 2:
        return torch.zeros_like(p[0])
    i, j = _pairs(p.shape[0])
    a, b = p[i], p[j]
    js = binary_entropy((a + b) / 2) - (binary_entropy(a) + binary_entropy(b)) / 2
    return js.mean(0).clamp(0, 1)


def epistemic_kl(probs: torch.Tensor) -> torch.Tensor:
    """Mean over ordered head pairs (h != h') of KL(p^h || p^h') in bits, clipped to [0, 1]."""
    p = _check(probs)
    if p.shape[0] < 2:
        return torch.zeros_like(p[0])
    i, j = _pairs(p.shape[0])
    a, b = p[i], p[j]

    def kl(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x * torch.log2(x / y) + (1 - x) * torch.log2((1 - x) / (1 - y))

    return ((kl(a, b) + kl(b, a)) / 2).mean(0).clamp(0, 1)


def bma_margin(probs: torch.Tensor) -> torch.Tensor:
    """bBMA: 1 - |2 pbar - 1|."""
    pbar = _shape(probs).mean(0)
    return (1 - (2 * pbar - 1).abs()).clamp(0, 1)


def gmu(probs: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Gated margin: g = 1 - exp(-|2 pbar - 1| / (2 s + eps)), u = 1 - g |2 pbar - 1|."""
    margin = (2 * _shape(probs).mean(0) - 1).abs()
    s = probs.std(0, correction=0)
    g = 1 - torch.exp(-margin / (2 * s + eps))
    return (1 - g * margin).clamp(0, 1)


MEASURES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "predictive": predictive,
    "aleatoric": aleatoric,
    "mutual_information": mutual_information,
    "epistemic_js": epistemic_js,
    "epistemic_kl": epistemic_kl,
    "bma_margin": bma_margin,
    "gmu": gmu,
}


def uncertainty(name: str, probs: torch.Tensor) -> torch.Tensor:
    """The named measure on head probabilities (H, B, K) -> (B, K) in [0, 1]."""
    if name not in MEASURES:
        raise ValueError(f"unknown uncertainty measure {name!r}; known: {', '.join(MEASURES)}")
    return MEASURES[name](probs)
