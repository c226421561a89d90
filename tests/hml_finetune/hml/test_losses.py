"""MCLoss against the slow formula, masking, node counts and weights by hand, placements, focal."""

import pytest
import torch

from hml_finetune.hml.constraint import MaxConstraint, dense_max_constraint
from hml_finetune.hml.hierarchy import Hierarchy
from hml_finetune.hml.losses import (
    MCLoss,
    NodeWeighting,
    mc_loss,
    node_counts,
    node_weights,
    raw_node_weights,
    rescale_weights,
)
from hml_finetune.hml.uncertainty import bma_margin

# r -> a, b; a -> c, d; b -> e   (order r, a, b, c, d, e)
SIX = Hierarchy.from_edges([("r", "a"), ("r", "b"), ("a", "c"), ("a", "d"), ("b", "e")])


def six_data():
    labels = [["c"], ["d"], ["c"], ["e"], ["a"]]  # the last stops early: c, d unknown
    return SIX.encode_many(labels)


def slow_mc_loss(logits, y, m):
    """The C-HMCNN formula in probability space with the dense oracle, masked mean."""
    R = torch.from_numpy(SIX.descendant_matrix())
    p = torch.sigmoid(logits)
    constr = dense_max_constraint(p, R)
    train = (1 - y) * constr + y * dense_max_constraint(y * p, R)
    bce = -(y * torch.log(train) + (1 - y) * torch.log(1 - train))
    return (bce * m).sum() / m.sum()


def test_mc_loss_equals_probability_space_formula():
    y, m = six_data()
    logits = torch.randn(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    fast = mc_loss(logits, y, m, MaxConstraint(SIX))
    torch.testing.assert_close(fast, slow_mc_loss(logits, y.double(), m.double()))
    summed = mc_loss(logits, y, m, MaxConstraint(SIX), reduction="sum")
    torch.testing.assert_close(summed, fast * m.sum())
    none = mc_loss(logits, y, m, MaxConstraint(SIX), reduction="none")
    assert none.shape == (5, 6) and (none[m == 0] == 0).all()


def test_masked_entry_adds_nothing_to_loss_or_gradient():
    y, m = SIX.encode_many([["a"]])  # c and d unknown
    c, d = SIX.index["c"], SIX.index["d"]
    assert m[0, c] == 0 and m[0, d] == 0
    logits = torch.tensor([[0.5, 1.0, -1.0, 0.3, -0.2, -2.0]], requires_grad=True)
    loss = mc_loss(logits, y, m, MaxConstraint(SIX))
    (grad,) = torch.autograd.grad(loss, logits)
    assert grad[0, c] == 0 and grad[0, d] == 0
    moved = logits.detach().clone()
    moved[0, c], moved[0, d] = 5.0, -7.0
    assert torch.equal(mc_loss(moved, y, m, MaxConstraint(SIX)), loss.detach())
    # the same entries known (negatives) do change the loss and get gradient
    known = torch.ones_like(m)
    loss_known = mc_loss(logits, y, known, MaxConstraint(SIX))
    (grad_known,) = torch.autograd.grad(loss_known, logits)
    assert grad_known[0, c] != 0 and grad_known[0, d] != 0


def test_node_counts_ignore_masked_entries():
    y, m = six_data()
    n, N = node_counts(y, m)
    assert n.tolist() == [5, 4, 1, 2, 1, 1]
    assert N.tolist() == [5, 5, 5, 4, 4, 5]
    n_desc, N_desc = node_counts(y, m, "descendants", SIX)
    assert n_desc.tolist() == [14, 7, 2, 2, 1, 1]
    assert N_desc.tolist() == N.tolist()


def test_class_wise_and_binary_weights_by_hand():
    y, m = six_data()
    n, N = node_counts(y, m)
    raw_c = raw_node_weights(n, N, "class-wise")
    expect_c = [1.0, 5 / 24, 5 / 6, 4 / 12, 4 / 6, 5 / 6]  # N/(K n), 1 where n = N
    torch.testing.assert_close(raw_c, torch.tensor(expect_c, dtype=torch.float64))
    # min 5/24, max 1: 0.25 + 1 * (w - 5/24) / (19/24)
    scaled = [1.25, 0.25, 0.25 + 15 / 19, 0.25 + 3 / 19, 0.25 + 11 / 19, 0.25 + 15 / 19]
    torch.testing.assert_close(node_weights(y, m, "class-wise"), torch.tensor(scaled))
    raw_b = raw_node_weights(n, N, "binary")
    torch.testing.assert_close(
        raw_b, torch.tensor([1.0, 0.625, 2.5, 1.0, 2.0, 2.5], dtype=torch.float64)
    )
    # min 0.625, max 2.5: 0.25 + 2.5 * (w - 0.625) / 1.875
    scaled_b = [0.75, 0.25, 2.75, 0.75, 0.25 + 2.5 * 1.375 / 1.875, 2.75]
    torch.testing.assert_close(node_weights(y, m, "binary"), torch.tensor(scaled_b))
    torch.testing.assert_close(
        rescale_weights(torch.tensor([0.5, 1.0, 2.0]), omega=0.1),
        torch.tensor([0.1, 0.1 + 2 / 3, 2.1]),
    )
    assert rescale_weights(torch.tensor([3.0, 3.0])).tolist() == [1.0, 1.0]
    n0 = torch.tensor([0.0, 2.0])
    assert raw_node_weights(n0, torch.tensor([4.0, 4.0]), "binary").tolist() == [1.0, 1.0]


def test_placements_and_reference_indexing():
    y, m = six_data()
    ref_pos, ref_neg = NodeWeighting("class-wise", "reference").fit(y, m, SIX)
    assert (ref_pos == 1).all()
    torch.testing.assert_close(
        ref_neg, node_weights(y, m, "class-wise", counting="descendants", hierarchy=SIX)
    )
    neg_pos, neg_neg = NodeWeighting("class-wise", "negative").fit(y, m, SIX)
    assert (neg_pos == 1).all()
    torch.testing.assert_close(neg_neg, node_weights(y, m, "class-wise"))
    pos_pos, pos_neg = NodeWeighting("binary", "positive").fit(y, m, SIX)
    assert (pos_neg == 1).all()
    torch.testing.assert_close(pos_pos, node_weights(y, m, "binary"))
    # in the loss: positives keep their plain loss, negatives are multiplied by w_j
    logits = torch.randn(5, 6, generator=torch.Generator().manual_seed(3))
    mcm = MaxConstraint(SIX)
    plain = mc_loss(logits, y, m, mcm, reduction="none")
    weighted = mc_loss(logits, y, m, mcm, ref_pos, ref_neg, reduction="none")
    expect = torch.where(y > 0, plain, plain * ref_neg)
    torch.testing.assert_close(weighted, expect)
    with pytest.raises(ValueError, match="placement"):
        NodeWeighting(placement="both").fit(y, m)


def test_focal_weighting_on_an_ensemble():
    y, m = six_data()
    logits = torch.randn(3, 5, 6, generator=torch.Generator().manual_seed(4))
    mcm = MaxConstraint(SIX)
    loss = MCLoss(SIX, measure="bma_margin", phi=0.25, k=2.0)(logits, y, m)
    u = bma_margin(mcm(torch.sigmoid(logits)))
    per_entry = mc_loss(logits, y, m, mcm, reduction="none")
    expect = (per_entry * (0.25 + u**2)).sum() / (3 * m.sum())
    torch.testing.assert_close(loss, expect)
    # the plain ensemble loss is the mean of the heads' losses
    heads = torch.stack([mc_loss(logits[h], y, m, mcm) for h in range(3)])
    torch.testing.assert_close(MCLoss(SIX)(logits, y, m), heads.mean())
