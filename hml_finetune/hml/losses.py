"""Masked MCLoss with node-wise imbalance weights and ensemble-uncertainty focal weights.

MCLoss (C-HMCNN): ytrain_j = (1 - y_j) MCM(p)_j + y_j MCM(y * p)_j, then BCE against y. The loss
takes LOGITS: the MCM commutes with the sigmoid, so ytrain is formed in logit space and the BCE is
`binary_cross_entropy_with_logits` (stable), identical in value to BCE on the probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from hml_finetune.hml.constraint import MaxConstraint
from hml_finetune.hml.hierarchy import Hierarchy
from hml_finetune.hml.uncertainty import uncertainty

Scheme = Literal["class-wise", "binary"]
Placement = Literal["positive", "negative", "reference"]
Counting = Literal["own", "descendants"]
Reduction = Literal["mean", "sum", "none"]


def mc_train_logits(
    logits: torch.Tensor, targets: torch.Tensor, mcm: MaxConstraint
) -> torch.Tensor:
    """ytrain in logit space: where y=1, MCM over positive descendants only; else MCM over all."""
    pos = targets > 0.5
    very_negative = torch.finfo(logits.dtype).min
    over_all = mcm(logits)
    over_pos = mcm(logits.masked_fill(~pos, very_negative))
    return torch.where(pos, over_pos, over_all)


def focal_weight(u: torch.Tensor, phi: float = 0.25, k: float = 2.0) -> torch.Tensor:
    """Per-entry focal weight phi + u^k for an uncertainty u in [0, 1]."""
    return phi + u.pow(k)


def mc_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    mcm: MaxConstraint,
    pos_weight: torch.Tensor | None = None,
    neg_weight: torch.Tensor | None = None,
    entry_weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Masked MCLoss on logits (..., B, K), e.g. (H, B, K) for an ensemble; targets/mask (B, K).

    Per entry: m * (y w_pos + (1 - y) w_neg) * entry_weight * BCE(ytrain, y). 'mean' divides the sum
    by the number of known entries (times the heads), not by the weights; 'none' returns the map.
    """
    y = targets.to(logits.dtype).expand_as(logits)
    z = mc_train_logits(logits, y, mcm)
    loss = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    w = mask.to(logits.dtype).expand_as(logits)
    if pos_weight is not None or neg_weight is not None:
        wp = pos_weight.to(logits) if pos_weight is not None else torch.ones_like(y[..., 0, :])
        wn = neg_weight.to(logits) if neg_weight is not None else torch.ones_like(y[..., 0, :])
        w = w * (y * wp + (1 - y) * wn)
    if entry_weight is not None:
        w = w * entry_weight.to(logits)
    loss = torch.where(w != 0, loss * w, torch.zeros_like(loss))
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        known = (mask != 0).expand_as(logits).sum()
        return loss.sum() / known.clamp(min=1)
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


# ----------------------------------------------------------------------------- node weights
def node_counts(
    targets: torch.Tensor,
    mask: torch.Tensor,
    counting: Counting = "own",
    hierarchy: Hierarchy | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, N): n_j = known samples positive at j, N_j = samples where j is known; masked ignored.

    'own' counts each sample once per node (targets are already propagated to ancestors).
    'descendants' (the published code) replaces n_j by the sum of n_d over d in D(j); N_j is kept.
    """
    known = (mask != 0).to(torch.float64)
    n = (targets.to(torch.float64) * known).sum(0)
    N = known.sum(0)
    if counting == "descendants":
        if hierarchy is None:
            raise ValueError("counting='descendants' needs the hierarchy")
        R = torch.from_numpy(hierarchy.descendant_matrix()).to(torch.float64)
        n = R @ n
    elif counting != "own":
        raise ValueError(f"counting must be 'own' or 'descendants', got {counting!r}")
    return n, N


def raw_node_weights(
    n: torch.Tensor, N: torch.Tensor, scheme: Scheme = "class-wise"
) -> torch.Tensor:
    """class-wise w_j = N_j / (K n_j), binary w_j = N_j / (2 n_j); w_j = 1 where n_j = 0 or n_j = N_j."""
    K = n.numel()
    if scheme == "class-wise":
        denom = K * n
    elif scheme == "binary":
        denom = 2 * n
    else:
        raise ValueError(f"scheme must be 'class-wise' or 'binary', got {scheme!r}")
    w = N / denom.clamp(min=1e-12)
    return torch.where((n == 0) | (n == N), torch.ones_like(w), w)


def rescale_weights(w: torch.Tensor, omega: float = 0.25) -> torch.Tensor:
    """Min-max rescale into [omega, omega + w_max]: omega + w_max (w - w_min) / (w_max - w_min).

    All-equal weights carry no imbalance information and become all ones.
    """
    lo, hi = w.min(), w.max()
    if hi <= lo:
        return torch.ones_like(w)
    return omega + hi * (w - lo) / (hi - lo)


@dataclass
class NodeWeighting:
    """Node-wise imbalance weights: scheme, where they go, the floor omega, and the counting rule.

    placement 'positive' weights the loss of positive targets, 'negative' that of negative ones;
    'reference' is the published code: on negatives, counts summed over descendants.
    counting None means 'descendants' for 'reference' and 'own' otherwise.
    """

    scheme: Scheme = "class-wise"
    placement: Placement = "reference"
    omega: float = 0.25
    counting: Counting | None = None

    def resolved_counting(self) -> Counting:
        if self.counting is not None:
            return self.counting
        return "descendants" if self.placement == "reference" else "own"

    def fit(
        self, targets: torch.Tensor, mask: torch.Tensor, hierarchy: Hierarchy | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(pos_weight, neg_weight), each (K,) float32, from training targets and mask."""
        n, N = node_counts(targets, mask, self.resolved_counting(), hierarchy)
        w = rescale_weights(raw_node_weights(n, N, self.scheme), self.omega).float()
        ones = torch.ones_like(w)
        if self.placement == "positive":
            return w, ones
        if self.placement in ("negative", "reference"):
            return ones, w
        raise ValueError(
            f"placement must be positive, negative or reference, got {self.placement!r}"
        )


def node_weights(
    targets: torch.Tensor,
    mask: torch.Tensor,
    scheme: Scheme = "class-wise",
    omega: float = 0.25,
    counting: Counting = "own",
    hierarchy: Hierarchy | None = None,
) -> torch.Tensor:
    """The rescaled node weights w (K,) before placement."""
    n, N = node_counts(targets, mask, counting, hierarchy)
    return rescale_weights(raw_node_weights(n, N, scheme), omega).float()


# ----------------------------------------------------------------------------- module
class MCLoss(nn.Module):
    """Masked MCLoss on logits (B, K) or (H, B, K), optional node weights and focal weighting.

    With `measure` set, each head's per-entry loss is multiplied by phi + u^k, u the named
    uncertainty of the detached constrained probabilities of all heads.
    """

    def __init__(
        self,
        hierarchy: Hierarchy,
        pos_weight: torch.Tensor | None = None,
        neg_weight: torch.Tensor | None = None,
        measure: str | None = None,
        phi: float = 0.25,
        k: float = 2.0,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        self.mcm = MaxConstraint(hierarchy)
        self.register_buffer("pos_weight", pos_weight, persistent=False)
        self.register_buffer("neg_weight", neg_weight, persistent=False)
        self.measure, self.phi, self.k, self.reduction = measure, phi, k, reduction

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        entry_weight = None
        if self.measure is not None:
            with torch.no_grad():
                heads = logits if logits.dim() == 3 else logits.unsqueeze(0)
                u = uncertainty(self.measure, self.mcm(torch.sigmoid(heads)))
                entry_weight = focal_weight(u, self.phi, self.k)
        return mc_loss(
            logits,
            targets,
            mask,
            self.mcm,
            self.pos_weight,
            self.neg_weight,
            entry_weight,
            self.reduction,
        )
