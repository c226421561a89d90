"""The comparison grid as dataclasses: a base finetune recipe, starting points, modes, losses, seeds.

Loaded with `ssl_benthic.core.config.load_config(CompareConfig, path, overrides)`; every cell of the grid is
the base recipe plus, in this order, the data paths (`data`, or the sample's), `base_overrides`, the start's, the
mode's and the loss's overrides, then `seed` and `output_dir` (so later overrides win).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["PretrainSpec", "StartConfig", "LossSetting", "DataPaths", "CompareConfig"]

NAME = re.compile(r"^[A-Za-z0-9_.]+$")


@dataclass
class PretrainSpec:
    """How to make a missing SSL export: a pretraining recipe, its overrides (e.g. a step budget)
    and its output_dir (None: the recipe's); the last checkpoint there is reused when present."""

    recipe: str
    overrides: list[str] = field(default_factory=list)
    output_dir: str | None = None


@dataclass
class StartConfig:
    """A starting point: `weights` is "random", "imagenet" or the path of a stage-1 export.

    `weights_file`: a local timm ImageNet weights file (imagenet only; without it and without the
    hub the start is skipped). `pretrain`: how to make the export when it is missing.
    `overrides`: extra finetune overrides for this start (e.g. backbone.name=resnet50, or
    backbone.pool=mean for a ViT); an export's or import's own timm name is used unless they set
    one. `generic`: not trained on the domain (ImageNet, DINOv2, DINOv3, BioCLIP), the starts the
    report compares every start with; None: true for imagenet only. A start whose weights path (or
    weights_file) does not exist, and that has no `pretrain` to make it, is skipped.
    """

    name: str
    weights: str = "random"
    weights_file: str | None = None
    pretrain: PretrainSpec | None = None
    overrides: list[str] = field(default_factory=list)
    generic: bool | None = None

    @property
    def is_generic(self) -> bool:
        return self.weights == "imagenet" if self.generic is None else self.generic

    @property
    def is_export(self) -> bool:
        return self.weights not in ("random", "imagenet")


@dataclass
class LossSetting:
    """A named loss setting: finetune overrides, normally `loss.*` (e.g. [loss.name=mcloss])."""

    name: str
    overrides: list[str] = field(default_factory=list)


@dataclass
class DataPaths:
    """One's own labelled shard folders (e.g. `make-shards --split` output), read, never written."""

    train: str
    val: str
    test: str

    def items(self) -> list[tuple[str, str]]:
        return [("train", self.train), ("val", self.val), ("test", self.test)]


@dataclass
class CompareConfig:
    """The grid {starts} x {modes} x {losses} x {seeds} on one labelled data set.

    `data`: one's own shard folders {train, val, test}; every cell reads them (then `sample` must be
    null). `sample`: the synthetic sample's folder, drawn with `make_sample(sample, **sample_kwargs)`
    when the folder does not exist yet (or is empty); a folder holding anything else is refused,
    never written into. None (and no `data`): the base recipe's data paths. `mode_overrides`: per mode, e.g. {finetune: [trainer.max_epochs=5]}.
    `feature_cache`: share cached linear-probe features between cells (output_dir/feature_cache).
    """

    base: str
    starts: list[StartConfig]
    base_overrides: list[str] = field(default_factory=list)
    modes: list[Literal["linear", "finetune"]] = field(default_factory=lambda: ["linear"])
    mode_overrides: dict[str, list[str]] = field(default_factory=dict)
    losses: list[LossSetting] = field(
        default_factory=lambda: [LossSetting("mcloss", ["loss.name=mcloss"])]
    )
    seeds: list[int] = field(default_factory=lambda: [0])
    data: DataPaths | None = None
    sample: str | None = "shards/sample"
    sample_kwargs: dict[str, Any] = field(default_factory=dict)
    feature_cache: bool = True
    output_dir: str = "runs/compare"

    def validate(self) -> None:
        for kind, names in (
            ("starts", [s.name for s in self.starts]),
            ("losses", [loss.name for loss in self.losses]),
        ):
            if not names:
                raise ValueError(f"'{kind}' is empty: the grid needs at least one")
            for name in names:
                if not NAME.match(name) or "-" in name:
                    raise ValueError(f"{kind} name {name!r}: use letters, digits, '_' or '.'")
            if len(set(names)) != len(names):
                raise ValueError(f"{kind} names must be unique, got {names}")
        for label, values in (("modes", self.modes), ("seeds", self.seeds)):
            if not values or len(set(values)) != len(values):
                raise ValueError(f"'{label}' must be a non-empty list without repeats: {values}")
        for mode in self.mode_overrides:
            if mode not in ("linear", "finetune"):
                raise ValueError(f"mode_overrides key {mode!r} is not 'linear' or 'finetune'")
        if self.data is not None and self.sample is not None:
            raise ValueError(
                f"'data' and 'sample' are both set (sample: {self.sample}): 'data' reads your own "
                "shard folders, 'sample' draws the synthetic sample; set sample: null"
            )
        for s in self.starts:
            if s.weights_file is not None and s.weights != "imagenet":
                raise ValueError(f"start {s.name!r}: weights_file is for weights: imagenet only")
            if s.pretrain is not None and not s.is_export:
                raise ValueError(
                    f"start {s.name!r}: pretrain needs weights to be the export path it writes"
                )

    def check_inputs(self) -> None:
        """The base recipe and each start's pretraining recipe exist (a start's missing export
        fails that start's cells, not the grid)."""
        from ssl_benthic.core.paths import require_path

        require_path(self.base, "base", "recipe")
        if self.data is not None:
            from ssl_benthic.data.shards.reader import require_shards

            for split, path in self.data.items():
                require_shards(path, f"data.{split}")
        for s in self.starts:
            if s.pretrain is not None:
                require_path(s.pretrain.recipe, f"starts[{s.name}].pretrain.recipe", "recipe")
