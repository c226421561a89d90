"""MLP heads and the ensemble: shapes, layer layout, and the mean of constrained outputs."""

import pytest
import torch
from torch import nn

from hml_finetune.hml.constraint import dense_max_constraint
from hml_finetune.hml.heads import EnsembleHeads, MLPHead
from hml_finetune.hml.hierarchy import Hierarchy

DAG = Hierarchy.from_edges([("r", "a"), ("r", "b"), ("a", "c"), ("b", "c"), ("c", "d")])


def test_mlp_head_layout():
    head = MLPHead(10, 5, hidden=(8, 6), dropout=0.7, activation="relu")
    kinds = [type(m) for m in head]
    assert kinds == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert [m.out_features for m in head if isinstance(m, nn.Linear)] == [8, 6, 5]
    assert head[2].p == 0.7
    assert head(torch.randn(3, 10)).shape == (3, 5)
    linear = MLPHead(10, 5)
    assert len(linear) == 1 and isinstance(linear[0], nn.Linear)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        MLPHead(10, 5, activation="swish")


def test_ensemble_prediction_is_mean_of_constrained_heads():
    torch.manual_seed(0)
    ens = EnsembleHeads(7, DAG, n_heads=3, hidden=(16,), dropout=0.0, activation="gelu").eval()
    x = torch.randn(4, 7)
    logits = ens(x)
    assert logits.shape == (3, 4, len(DAG))
    assert not torch.allclose(logits[0], logits[1])  # heads are initialised independently
    R = torch.from_numpy(DAG.descendant_matrix())
    per_head = torch.stack([dense_max_constraint(torch.sigmoid(logits[h]), R) for h in range(3)])
    torch.testing.assert_close(ens.constrained_probs(logits), per_head)
    pred = ens.predict(x)
    torch.testing.assert_close(pred, per_head.mean(0))
    for parent, kids in DAG.children.items():
        for kid in kids:
            assert (pred[:, DAG.index[parent]] >= pred[:, DAG.index[kid]]).all()
    torch.testing.assert_close(ens.head_probs(logits), torch.sigmoid(logits))
