"""The stage-2 recipe as dataclasses: backbone, mode, labelled data, HML heads, loss, optimiser, trainer.

Loaded with `ssl_benthic.core.config.load_config(FinetuneConfig, path, overrides)`; `validate()` runs on load,
so a wrong loss, threshold or fraction fails before any image is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from hml_finetune.hml.loss_names import MEASURES, LossName
from ssl_benthic.core.catami import HEADS
from ssl_benthic.core.trainer_config import SharedTrainerConfig

__all__ = [
    "BackboneConfig",
    "DataConfig",
    "HeadsConfig",
    "LossConfig",
    "OptimizerConfig",
    "TrainerConfig",
    "PredictConfig",
    "FinetuneConfig",
]


@dataclass
class BackboneConfig:
    """A timm backbone; `weights` is "random", "imagenet" or the path of a stage-1 export.

    `weights_file` is a local timm ImageNet weights file (used with weights: imagenet when the hub
    is unreachable); `img_size` is passed to timm (ViTs), not the input resolution (see data).
    """

    name: str = "resnet50"
    weights: str = "random"
    weights_file: str | None = None
    img_size: int | None = None
    pool: str = "cls"  # a ViT's feature: cls, mean or cls+mean (ssl_benthic.weights.vit_features)


@dataclass
class DataConfig:
    """Labelled shard folders and the image pipeline.

    mean/std None: the export JSON's statistics when weights is an export, timm's pretrained
    statistics for imagenet, else the BenthicNet labelled-subset statistics. `augment` (random
    resized crop + flips) applies in finetune mode only; linear mode never augments, so features
    can be cached. `shuffle` false reads samples in shard order (for exact cached/uncached checks).
    `feature_cache_dir`: where cached linear-probe features are kept across runs (None: memory).
    """

    train: str = "shards/sample/train"
    val: str = "shards/sample/val"
    test: str = "shards/sample/test"
    batch_size: int = 64
    num_workers: int = 4
    img_size: int = 224
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    augment: bool = True
    shuffle: bool = True
    shuffle_buffer: int = 1000
    feature_cache_dir: str | None = None


@dataclass
class HeadsConfig:
    """One ensemble of `n_heads` MLP heads per hierarchy root (CATAMI head); `hidden` () = linear.

    `names` picks heads; None = every head labelled in the training split (except flat and
    single-label ones). `schemes`: head -> `catami` (the built-in scheme; default for biota,
    substrate, relief, bedforms), `data` (the labels found in the splits and their ancestors;
    default for any other head) or the path of a scheme file (one label path per line, see
    `hml_finetune.hml.schemes`); `separators`: head -> the path separator of its scheme (default
    " > "). `scheme_sha256`: head -> the sha256 of its scheme file, written into a run's resolved
    config, so a rerun with a changed file fails.
    `flat`: extra multi-label heads whose labels are plain class names (e.g. colour: ["red"]), each
    a depth-1 hierarchy "[COLOUR] > red" (same loss, thresholds and metrics as the CATAMI heads).
    `single`: extra single-label heads (one class per annotated image, e.g. habitat: ["reef"]):
    one MLP with softmax, cross-entropy over the annotated samples, accuracy / macro F1.
    Classes of both come from the labels of the train, val and test splits.
    """

    n_heads: int = 1
    hidden: tuple[int, ...] = ()
    dropout: float = 0.0
    activation: str = "relu"
    names: tuple[str, ...] | None = None
    flat: tuple[str, ...] = ()
    single: tuple[str, ...] = ()
    schemes: dict[str, str] = field(default_factory=dict)
    separators: dict[str, str] = field(default_factory=dict)
    scheme_sha256: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        """flat and single heads: unique, not CATAMI heads, not in `names`, not both."""
        for key, extra in (("flat", self.flat), ("single", self.single)):
            for head in extra:
                if head in HEADS or head in (self.names or ()):
                    raise ValueError(
                        f"heads.{key}: {head!r} is a CATAMI head (or in heads.names); "
                        "flat/single heads need their own names"
                    )
                if list(extra).count(head) > 1:
                    raise ValueError(f"heads.{key}: {head!r} is listed twice")
        for key, mapping in (("schemes", self.schemes), ("separators", self.separators)):
            for head, value in mapping.items():
                if not value:
                    raise ValueError(f"heads.{key}.{head} is empty")
        both = sorted(set(self.flat) & set(self.single))
        if both:
            raise ValueError(f"heads.flat and heads.single both list {both}")


@dataclass
class LossConfig:
    """MCLoss variant: `mcloss` (default, bench/results/loss_default.md), `weighted` adds node
    weights (helps at a fixed threshold only), `focal` the ensemble-uncertainty weight phi + u^k.

    scheme/placement/counting/omega define the node weights (see `hml_finetune.hml.losses.NodeWeighting`;
    counting None = 'descendants' for placement 'reference', else 'own').
    """

    name: LossName = "mcloss"
    measure: str = "gmu"
    scheme: Literal["class-wise", "binary"] = "class-wise"
    placement: Literal["positive", "negative", "reference"] = "reference"
    counting: Literal["own", "descendants"] | None = None
    omega: float = 0.25
    phi: float = 0.25
    k: float = 2.0


@dataclass
class OptimizerConfig:
    """AdamW; the encoder (finetune mode) gets lr * encoder_lr_mult and its own linear warm-up over
    `encoder_warmup_epochs` (None: `warmup_epochs`, the heads' warm-up); then cosine decay to
    lr * min_lr_ratio. The schedule steps per optimiser step. Biases and norms get no weight decay.

    `encoder_frozen_epochs` (finetune mode): the encoder is held fixed (no gradients, BN statistics
    frozen) for the first epochs while the heads train, and its warm-up starts after them. This is
    LP-FT (Kumar et al. 2022): random heads' early gradients otherwise distort pretrained features."""

    lr: float = 1e-3
    weight_decay: float = 1e-4
    encoder_lr_mult: float = 0.1
    warmup_epochs: float = 0.0
    encoder_warmup_epochs: float | None = None
    encoder_frozen_epochs: float = 0.0
    min_lr_ratio: float = 0.01


@dataclass
class TrainerConfig(SharedTrainerConfig):
    """Lightning Trainer options (the keys both stages share, `SharedTrainerConfig`, and these).
    `seed` None = the top-level seed. Checkpoints every `checkpoint_every_n_epochs` and at the end
    (last.ckpt) under output_dir/checkpoints."""

    max_epochs: int = 20
    log_every_n_steps: int = 10
    checkpoint_every_n_epochs: int = 1
    tensorboard: bool = False
    seed: int | None = None


@dataclass
class PredictConfig:
    """How `predict` and the metrics turn node probabilities into one label (`label_rules`):
    `label_rule` expected-hops (default; the node minimising the expected hop distance to the true
    label; DAG schemes fall back to threshold), threshold (the deepest predicted node) or
    min-probability (the deepest node of the most probable path with probability >=
    `min_probability`)."""

    label_rule: Literal["expected-hops", "threshold", "min-probability"] = "expected-hops"
    min_probability: float = 0.5


@dataclass
class FinetuneConfig:
    """One stage-2 run: a starting point, a mode, a loss, a seed.

    `threshold`: "per-node" (default; one per node tuned on the val split, global for nodes with few
    val positives), "global" (one tuned on val) or a number in (0, 1) such as "0.5".
    `encoder_noise` alpha: w = (1 - alpha) w + alpha w_random after the weights are loaded.
    `train_fraction`: a seeded subset of the training split, stratified by head and depth.
    `calibration`: "temperature" (default) fits one temperature per HML head on the val split
    after training (`hml_finetune.hml.calibration`), stored in model.ckpt and applied by evaluate and
    predict; thresholds are tuned on the calibrated probabilities. "none" keeps T = 1.
    `predict`: the label rule (see `PredictConfig`).
    """

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    mode: Literal["linear", "finetune"] = "linear"
    data: DataConfig = field(default_factory=DataConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    threshold: str | float = "per-node"
    calibration: Literal["temperature", "none"] = "temperature"
    predict: PredictConfig = field(default_factory=PredictConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    cache_features: bool = True
    encoder_noise: float = 0.0
    train_fraction: float = 1.0
    seed: int = 0
    output_dir: str = "runs/finetune"

    @property
    def trainer_seed(self) -> int:
        return self.seed if self.trainer.seed is None else self.trainer.seed

    @property
    def cached(self) -> bool:
        """True when the linear probe trains on cached features."""
        return self.mode == "linear" and self.cache_features

    def validate(self) -> None:
        if self.loss.measure not in MEASURES:
            raise ValueError(f"loss.measure {self.loss.measure!r} is not one of {MEASURES}")
        if self.threshold not in ("global", "per-node"):
            try:
                value = float(self.threshold)  # type: ignore[arg-type]
            except ValueError:
                value = -1.0
            if not 0.0 < value < 1.0:
                raise ValueError(
                    f"threshold {self.threshold!r} must be a number in (0, 1), 'global' or 'per-node'"
                )
        if not 0.0 < self.predict.min_probability <= 1.0:
            raise ValueError(
                f"predict.min_probability {self.predict.min_probability} must be in (0, 1]"
            )
        if not 0.0 <= self.encoder_noise <= 1.0:
            raise ValueError(f"encoder_noise {self.encoder_noise} must be in [0, 1]")
        if not 0.0 < self.train_fraction <= 1.0:
            raise ValueError(f"train_fraction {self.train_fraction} must be in (0, 1]")
        o = self.optimizer
        if o.encoder_frozen_epochs < 0 or o.warmup_epochs < 0 or (o.encoder_warmup_epochs or 0) < 0:
            raise ValueError("optimizer warm-up and frozen epochs must be >= 0")
        if o.encoder_frozen_epochs >= self.trainer.max_epochs and self.mode == "finetune":
            raise ValueError(
                f"optimizer.encoder_frozen_epochs {o.encoder_frozen_epochs} leaves no epoch of "
                f"fine-tuning in trainer.max_epochs {self.trainer.max_epochs}; use mode: linear"
            )
        self.heads.validate()
        if self.heads.n_heads < 1:
            raise ValueError(f"heads.n_heads must be >= 1, got {self.heads.n_heads}")
        if self.data.batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {self.data.batch_size}")

    def check_inputs(self) -> None:
        """The three splits and a weights file exist (ConfigError naming the key and the path tried)."""
        from ssl_benthic.core.paths import require_path, require_weights
        from ssl_benthic.data.shards.reader import require_shards

        for split in ("train", "val", "test"):
            require_shards(getattr(self.data, split), f"data.{split}")
        for head, spec in self.heads.schemes.items():
            if spec not in ("catami", "data"):
                require_path(spec, f"heads.schemes.{head}", "scheme file")
        require_weights(self.backbone.weights, self.backbone.weights_file)
