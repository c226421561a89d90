"""Cross-head known negatives (one label per point) in stage-2 targets and masks, and the warning
for nodes that no training sample is a negative of."""

from __future__ import annotations

import warnings

import pytest
import torch

from hml_finetune.finetune.labels import (
    LabelledSplit,
    build_hierarchies,
    default_schemes,
    encode_split,
    warn_no_negatives,
)

SPONGE = "[BIOTA] > Biota > Sponges"
CORAL = "[BIOTA] > Biota > Cnidaria"
SAND = "[SUBSTRATE] > Substrate > Unconsolidated (soft)"


def _split() -> LabelledSplit:
    return LabelledSplit(
        ["a", "b", "c", "d"],
        [{"biota": [SPONGE]}, {"substrate": [SAND]}, {"biota": [CORAL]}, {}],
        "shards",
        [["substrate"], ["biota"], ["substrate"], []],  # d: no label, no negatives: unknown
    )


def test_a_point_of_another_head_is_a_known_negative_of_every_node():
    split = _split()
    hierarchies = build_hierarchies([split])
    targets = encode_split(split, hierarchies, default_schemes(hierarchies))
    y, m = targets["biota"]
    h = hierarchies["biota"]
    assert h.nodes == ["[BIOTA]", "[BIOTA] > Biota", CORAL, SPONGE]
    assert m[1].tolist() == [1, 1, 1, 1] and y[1].tolist() == [0, 0, 0, 0]  # the sand point
    assert m[3].tolist() == [0, 0, 0, 0]  # unlabelled, not a negative: unknown everywhere
    assert y[0].tolist() == [1, 1, 0, 1] and m[0].tolist() == [1, 1, 1, 1]  # as before
    ys, ms = targets["substrate"]
    assert ms[0].tolist() == ms[2].tolist() == [1, 1, 1] and ys[0].sum() == 0
    assert split.subset([1, 3]).negatives == [["biota"], []]


def test_a_label_of_the_head_wins_over_a_stray_negative():
    split = LabelledSplit(["a"], [{"biota": [SPONGE]}], "", [["biota"]])
    h = build_hierarchies([split])
    y, m = encode_split(split, h, default_schemes(h))["biota"]
    assert y[0].tolist() == [1, 1, 1] and m[0].tolist() == [1, 1, 1]


def _warned(targets, hierarchies) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_no_negatives(targets, hierarchies, "the training split")
    return [str(w.message) for w in caught]


def test_nodes_without_known_negatives_are_named_per_head():
    split = _split()
    split.negatives = [[], [], [], []]  # the old shards: the heads never see each other's points
    hierarchies = build_hierarchies([split])
    messages = _warned(encode_split(split, hierarchies, default_schemes(hierarchies)), hierarchies)
    assert len(messages) == 2
    biota = next(m for m in messages if m.startswith("head 'biota'"))
    assert "1 node(s) with no known negative in the training split: '[BIOTA] > Biota';" in biota
    substrate = next(m for m in messages if m.startswith("head 'substrate'"))
    assert f"'[SUBSTRATE] > Substrate', '{SAND}'" in substrate
    with_negatives = _split()
    targets = encode_split(with_negatives, hierarchies, default_schemes(hierarchies))
    assert _warned(targets, hierarchies) == []


def test_heads_sharing_samples_are_not_warned_about_the_chain_every_sample_passes():
    """Images annotated in both heads (the sample): '[SUBSTRATE] > Substrate' is the head."""
    split = LabelledSplit(
        ["a", "b"], [{"biota": [SPONGE], "substrate": [SAND]}, {"biota": [CORAL], "substrate": []}]
    )
    hierarchies = build_hierarchies([split])
    targets = encode_split(split, hierarchies, default_schemes(hierarchies))
    assert _warned(targets, hierarchies) == []


def test_one_head_is_not_warned_about_the_chain_every_sample_passes():
    split = LabelledSplit(["a", "b"], [{"biota": [SPONGE]}, {"biota": [CORAL]}])
    hierarchies = build_hierarchies([split])
    targets = encode_split(split, hierarchies, default_schemes(hierarchies))
    assert _warned(targets, hierarchies) == []  # '[BIOTA] > Biota' is the head itself here
    y, m = targets["biota"]
    m[:, 2] = torch.tensor([0.0, 1.0])  # Cnidaria: known only where positive
    (message,) = _warned({"biota": (y, m)}, hierarchies)
    assert f"'{CORAL}'" in message


@pytest.mark.parametrize("bad", ["substrate", [1]])
def test_negative_heads_must_be_a_list_of_names(bad):
    from hml_finetune.finetune.labels import negative_heads
    from ssl_benthic.core.errors import LabelError

    with pytest.raises(LabelError, match="sample 'k'.*list of head names"):
        negative_heads({"negative_heads": bad}, "k", "shards")
