"""HML heads: MLPs on shared input; an ensemble's prediction is the mean of constrained outputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hml_finetune.hml.constraint import MaxConstraint
from hml_finetune.hml.hierarchy import Hierarchy

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}


class MLPHead(nn.Sequential):
    """Linear -> activation -> dropout per hidden size, then a Linear to logits (C-HMCNN's FFNN).

    hidden=() gives a linear head.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: Sequence[int] = (),
        dropout: float = 0.0,
        activation: str = "relu",
    ) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}")
        layers: list[nn.Module] = []
        dims = [in_dim, *hidden]
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(a, b), ACTIVATIONS[activation](), nn.Dropout(dropout)]
        layers.append(nn.Linear(dims[-1], out_dim))
        super().__init__(*layers)


class EnsembleHeads(nn.Module):
    """H independent MLP heads over the same input; forward(x) gives logits (H, B, K)."""

    def __init__(
        self,
        in_dim: int,
        hierarchy: Hierarchy,
        n_heads: int = 1,
        hidden: Sequence[int] = (),
        dropout: float = 0.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if n_heads < 1:
            raise ValueError(f"n_heads must be >= 1, got {n_heads}")
        K = len(hierarchy)
        self.heads = nn.ModuleList(
            MLPHead(in_dim, K, hidden, dropout, activation) for _ in range(n_heads)
        )
        self.mcm = MaxConstraint(hierarchy)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([head(x) for head in self.heads])

    @staticmethod
    def head_probs(logits: torch.Tensor) -> torch.Tensor:
        """Per-head sigmoid probabilities (H, B, K), unconstrained."""
        return torch.sigmoid(logits)

    def constrained_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-head MCM(sigmoid(logits)) (H, B, K): no node below any of its descendants."""
        return self.mcm(torch.sigmoid(logits))

    def predict_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The ensemble prediction (B, K): mean over heads of the constrained probabilities."""
        return self.constrained_probs(logits).mean(0)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Prediction (B, K) for input features x (B, in_dim)."""
        return self.predict_from_logits(self(x))
