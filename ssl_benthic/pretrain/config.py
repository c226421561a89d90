"""The pretraining recipe as dataclasses: method, backbone, data, views, optimiser, trainer, monitor.

Loaded with `ssl_benthic.core.config.load_config(PretrainConfig, path, overrides)`; `validate()` runs on load so
an unknown method, backbone or method parameter fails before any training starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ssl_benthic.core.normalization import BENTHICNET_LABELLED_MEAN, BENTHICNET_LABELLED_STD
from ssl_benthic.core.trainer_config import SharedTrainerConfig


@dataclass
class MethodConfig:
    """Method name (see `ssl_benthic.pretrain.methods.METHODS`) and its own parameters (its `Params` dataclass).

    `init_heads`: when `backbone.weights` is an import of the same method that kept its heads
    (`ssl-benthic import-weights`), `import` starts the projector (etc.) from them where their
    shapes match the recipe, `fresh` from random init; the choice is always reported."""

    name: str = "byol"
    params: dict[str, Any] = field(default_factory=dict)
    init_heads: Literal["import", "fresh"] = "import"


@dataclass
class BackboneConfig:
    """A timm backbone; `weights` is random, imagenet or a path to a stage-1 export."""

    name: str = "resnet50"
    weights: str = "random"
    weights_file: str | None = None
    img_size: int | None = None
    patch_size: int | None = None
    drop_path_rate: float = 0.0
    kwargs: dict[str, Any] = field(default_factory=dict)
    pool: str = "cls"  # a ViT's feature: cls, mean or cls+mean (ssl_benthic.weights.vit_features)


@dataclass
class DataConfig:
    """Unlabelled shards; `batch_size` is per device; `epoch_samples` sets the epoch length (all ranks)."""

    shards: str = "shards/sample/unlabelled"
    batch_size: int = 256
    num_workers: int = 8
    shuffle_buffer: int = 1000
    epoch_samples: int | None = None


@dataclass
class TransformConfig:
    """View augmentations, passed to the method's lightly transform.

    `global_crop_scale`/`local_crop_scale` are RandomResizedCrop scale ranges (None: the method's
    default); `cj_strength` scales colour jitter; `extra` is passed as keyword arguments as is.
    `device`: `cpu` runs the whole lightly transform in the loader workers; `accelerator` has the
    workers decode and crop to uint8 only, and runs the rest of every view batched on the training
    device, read out of the same lightly transform (`ssl_benthic.pretrain.augment`).
    """

    input_size: int = 224
    global_crop_scale: tuple[float, float] | None = None
    local_crop_size: int = 96
    local_crop_scale: tuple[float, float] | None = None
    n_local_views: int = 6
    cj_prob: float = 0.8
    cj_strength: float | None = None
    hf_prob: float = 0.5
    vf_prob: float = 0.0
    rr_prob: float = 0.0
    mean: tuple[float, float, float] = BENTHICNET_LABELLED_MEAN
    std: tuple[float, float, float] = BENTHICNET_LABELLED_STD
    extra: dict[str, Any] = field(default_factory=dict)
    device: Literal["cpu", "accelerator"] = "cpu"


@dataclass
class OptimizerConfig:
    """Optimiser and schedule: lr = lr_base * global_batch / 256 when `scale_lr` (linear scaling rule).

    Linear warm-up (warmup_steps, else warmup_epochs) then cosine decay to lr * min_lr_ratio; norms
    and biases get no weight decay; `weight_decay_end` (DINO) decays weight decay on a cosine.
    """

    name: Literal["sgd", "lars", "adamw"] = "lars"
    lr: float = 0.45
    scale_lr: bool = True
    weight_decay: float = 1e-6
    weight_decay_end: float | None = None
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_epochs: float = 10.0
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.001


@dataclass
class TrainerConfig(SharedTrainerConfig):
    """Lightning Trainer options (the keys both stages share, `SharedTrainerConfig`, and these);
    checkpoints every N steps and at the end, keeping the last K.

    `channels_last`: model and batches in channels-last memory format (faster convolutions on GPUs).
    """

    max_steps: int = -1
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    checkpoint_every_n_steps: int = 1000
    keep_last_k: int = 3
    sync_batchnorm: bool = True
    seed: int = 0
    deterministic: bool = False
    channels_last: bool = False


@dataclass
class KnnMonitorConfig:
    """Online kNN (cosine, k neighbours, weights exp(sim / temperature)) at one head and depth.

    Queries come from `shards`, the feature bank from `bank_shards` (labelled train shards).
    """

    shards: str = "shards/sample/val"
    bank_shards: str = "shards/sample/train"
    head: str = "substrate"
    depth: int = 2
    every_n_epochs: int = 1
    k: int = 20
    temperature: float = 0.1
    batch_size: int = 64
    max_samples: int | None = None


@dataclass
class MonitorConfig:
    knn: KnnMonitorConfig | None = None


@dataclass
class LoggerConfig:
    csv: bool = True
    tensorboard: bool = True


@dataclass
class PretrainConfig:
    method: MethodConfig = field(default_factory=MethodConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    transform: TransformConfig = field(default_factory=TransformConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    output_dir: str = "runs/pretrain/default"

    def validate(self) -> None:
        """Fail early on an unknown backbone name and impossible values (the method checks its own
        name and params: `SSLMethod.check`)."""
        from ssl_benthic.weights.backbones import BackboneError, check_model_name

        try:
            check_model_name(self.backbone.name)
        except BackboneError as exc:
            raise ValueError(f"backbone.name: {exc}") from exc
        if self.data.batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {self.data.batch_size}")
        if self.trainer.max_steps < 0 and self.trainer.max_epochs < 1:
            raise ValueError("set trainer.max_steps or trainer.max_epochs")
        if self.trainer.keep_last_k < 1:
            raise ValueError("trainer.keep_last_k must be >= 1")

    def check_inputs(self) -> None:
        """The shards, the kNN monitor's folders and a weights file exist (ConfigError naming the key)."""
        from ssl_benthic.core.paths import require_weights
        from ssl_benthic.data.shards.reader import require_shards

        require_shards(self.data.shards, "data.shards")
        if self.monitor.knn is not None:
            require_shards(self.monitor.knn.shards, "monitor.knn.shards")
            require_shards(self.monitor.knn.bank_shards, "monitor.knn.bank_shards")
        require_weights(self.backbone.weights, self.backbone.weights_file)
