"""Per-channel mean and standard deviation that images are normalised with, by where they come from.

Two BenthicNet statistics exist and differ: the labelled subset's (this toolkit's default for
pretraining and fine-tuning) and the unlabelled set's (what the published BenthicNet encoders were
pretrained with, so their presets carry it).
"""

from __future__ import annotations

__all__ = [
    "BENTHICNET_LABELLED_MEAN",
    "BENTHICNET_LABELLED_STD",
    "BENTHICNET_UNLABELLED_MEAN",
    "BENTHICNET_UNLABELLED_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

BENTHICNET_LABELLED_MEAN = (0.363, 0.420, 0.344)
BENTHICNET_LABELLED_STD = (0.207, 0.210, 0.183)
BENTHICNET_UNLABELLED_MEAN = (0.359, 0.413, 0.386)
BENTHICNET_UNLABELLED_STD = (0.219, 0.215, 0.209)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
