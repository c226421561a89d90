"""Online kNN monitor: top-1 accuracy of a cosine kNN on frozen backbone features, logged as `knn_top1`.

Labels are one head's paths cut to a fixed depth (depth = levels below the head root, as in
`ssl_benthic.core.catami`); samples without that head, with a path shallower than the depth, or with
several different labels at that depth are skipped. Prediction is lightly's `knn_predict`: the k most
cosine-similar bank features vote with weight exp(sim / temperature).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
from lightly.utils.benchmarking import knn_predict
from torch import Tensor, nn

from ssl_benthic.core.catami import SEP, depth_of
from ssl_benthic.data.shards.reader import iter_samples
from ssl_benthic.pretrain.config import KnnMonitorConfig

log = logging.getLogger(__name__)

__all__ = ["label_at_depth", "LabelledImages", "load_labelled", "knn_top1", "KNNMonitor"]


def label_at_depth(meta: dict, head: str, depth: int) -> str | None:
    """The sample's single label of `head` cut to `depth`, or None when unknown or ambiguous."""
    paths = (meta.get("labels") or {}).get(head) or []
    cut = {SEP.join(p.split(SEP)[: depth + 1]) for p in paths if depth_of(p) >= depth}
    if len(cut) != 1 or any(depth_of(p) < depth for p in paths):
        return None
    return cut.pop()


@dataclass
class LabelledImages:
    images: Tensor  # (N, C, H, W), evaluation transform applied
    labels: Tensor  # (N,) class indices into `classes`
    classes: list[str]
    skipped: int


def load_labelled(
    shards: str,
    head: str,
    depth: int,
    transform: Callable,
    classes: list[str] | None = None,
    max_samples: int | None = None,
) -> LabelledImages:
    """Images and class indices of one shard folder; unseen classes extend `classes` (the bank's)."""
    classes = list(classes or [])
    index = {c: i for i, c in enumerate(classes)}
    images, labels, skipped = [], [], 0
    for _key, image, meta in iter_samples(shards):
        label = label_at_depth(meta, head, depth)
        if label is None:
            skipped += 1
            continue
        if label not in index:
            index[label] = len(classes)
            classes.append(label)
        images.append(transform(image))
        labels.append(index[label])
        if max_samples is not None and len(images) >= max_samples:
            break
    if not images:
        raise ValueError(f"{shards}: no sample has a '{head}' label at depth {depth}")
    return LabelledImages(torch.stack(images), torch.tensor(labels), classes, skipped)


@torch.no_grad()
def embed(backbone: nn.Module, images: Tensor, batch_size: int, device: torch.device) -> Tensor:
    """L2-normalised features of `images`, computed in eval mode (train mode is restored)."""
    was_training = backbone.training
    backbone.eval()
    feats = [
        backbone(images[i : i + batch_size].to(device)).float()
        for i in range(0, len(images), batch_size)
    ]
    backbone.train(was_training)
    return nn.functional.normalize(torch.cat(feats), dim=1)


def knn_top1(
    bank: Tensor,
    bank_labels: Tensor,
    query: Tensor,
    query_labels: Tensor,
    num_classes: int,
    k: int,
    t: float,
) -> float:
    """Top-1 accuracy of lightly's weighted kNN vote; features must be L2-normalised."""
    pred = knn_predict(query, bank.T, bank_labels, num_classes, knn_k=min(k, len(bank)), knn_t=t)
    return float((pred[:, 0] == query_labels.to(pred.device)).float().mean())


class KNNMonitor(pl.Callback):
    """Every `every_n_epochs` epochs, log `knn_top1` of the student backbone (images kept in memory)."""

    def __init__(self, cfg: KnnMonitorConfig, transform: Callable) -> None:
        self.cfg, self.transform = cfg, transform
        self.bank: LabelledImages | None = None
        self.query: LabelledImages | None = None

    def _load(self) -> None:
        c = self.cfg
        self.bank = load_labelled(
            c.bank_shards, c.head, c.depth, self.transform, max_samples=c.max_samples
        )
        self.query = load_labelled(
            c.shards, c.head, c.depth, self.transform, self.bank.classes, c.max_samples
        )
        log.info(
            "kNN monitor: %d bank / %d query samples, %d classes (%d + %d skipped)",
            len(self.bank.labels),
            len(self.query.labels),
            len(self.query.classes),
            self.bank.skipped,
            self.query.skipped,
        )

    def evaluate(self, backbone: nn.Module, device: torch.device) -> float:
        if self.bank is None:
            self._load()
        assert self.bank is not None and self.query is not None
        c = self.cfg
        bank = embed(backbone, self.bank.images, c.batch_size, device)
        query = embed(backbone, self.query.images, c.batch_size, device)
        n = len(self.query.classes)
        return knn_top1(
            bank, self.bank.labels.to(device), query, self.query.labels, n, c.k, c.temperature
        )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.cfg.every_n_epochs != 0:
            return
        acc = self.evaluate(pl_module.backbone, pl_module.device)
        # every rank computes the same value on the same data: no sync needed
        pl_module.log("knn_top1", acc, prog_bar=True, on_epoch=True, rank_zero_only=True)
