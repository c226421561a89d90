"""The max-constraint module (MCM): yhat_j = max over d in D(j) of p_d, in O(B x edges).

Nodes are processed by height (longest path to a leaf): every child of a node of height h has
height < h, so its value is final when level h reads it; this is exact on DAGs. Processing by depth
would not be. The operation is monotone-equivariant, so it applies equally to probabilities and
to logits (max of sigmoids = sigmoid of the max).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hml_finetune.hml.hierarchy import Hierarchy


class MaxConstraint(nn.Module):
    """yhat_j = max_{d in D(j)} p_d for p of shape (..., K), one scatter-amax per height level.

    The amax runs on the level's edges only; writing the level back costs one (B, K) copy per
    level (a Python loop over height levels, never over nodes).
    Where descendants tie for the max, `scatter_reduce(amax)` splits the gradient among them.
    """

    def __init__(self, hierarchy: Hierarchy) -> None:
        super().__init__()
        self.num_nodes = len(hierarchy)
        parent, child = hierarchy.edge_index()
        heights = hierarchy.height_array[parent] if len(parent) else np.zeros(0, dtype=np.int64)
        self.num_levels = 0
        for h in range(1, int(hierarchy.height_array.max(initial=0)) + 1):
            sel = heights == h
            nodes, local = np.unique(parent[sel], return_inverse=True)
            self._buffer(f"nodes_{h}", nodes)  # the level's nodes (all of height h)
            self._buffer(f"local_{h}", local)  # per edge: position of its parent in nodes_h
            self._buffer(f"child_{h}", child[sel])  # per edge: the child's node index
            self.num_levels = h

    def _buffer(self, name: str, values: np.ndarray) -> None:
        self.register_buffer(name, torch.from_numpy(values.astype(np.int64)), persistent=False)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        if p.shape[-1] != self.num_nodes:
            raise ValueError(
                f"expected {self.num_nodes} nodes in the last dim, got {tuple(p.shape)}"
            )
        lead = p.shape[:-1]
        out = p.reshape(-1, self.num_nodes)
        for h in range(1, self.num_levels + 1):
            nodes = getattr(self, f"nodes_{h}")
            local = getattr(self, f"local_{h}").unsqueeze(0).expand(out.shape[0], -1)
            src = out[:, getattr(self, f"child_{h}")]
            level = out[:, nodes].scatter_reduce(1, local, src, reduce="amax", include_self=True)
            out = out.index_copy(1, nodes, level)
        return out.reshape(*lead, self.num_nodes)


def dense_max_constraint(p: torch.Tensor, R: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Reference O(B K^2) form: yhat_j = max over d with R[j, d] of p_d (R[j, d] iff d in D(j))."""
    R = torch.as_tensor(R, device=p.device).bool()
    neg = torch.full((), float("-inf"), dtype=p.dtype, device=p.device)
    expanded = torch.where(R.unsqueeze(0), p.unsqueeze(1), neg)
    return expanded.max(dim=-1).values
