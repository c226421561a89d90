"""Typed YAML configs: unknown keys, wrong types, overrides and the resolved config written out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml

from ssl_benthic.core.config import ConfigError, load_config, save_config


@dataclass
class Trainer:
    max_steps: int = -1
    precision: str = "32"
    lr: float = 0.1


@dataclass
class Recipe:
    name: str
    method: Literal["byol", "mocov2"] = "byol"
    trainer: Trainer = field(default_factory=Trainer)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    tags: list[str] = field(default_factory=list)
    seed: int | None = None


def write(tmp_path, text: str):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_loads_nested_values_and_converts_lists_to_tuples(tmp_path):
    path = write(tmp_path, "name: a\ntrainer: {max_steps: 5, lr: 1}\nmean: [0.1, 0.2, 0.3]\n")
    cfg = load_config(Recipe, path)
    assert cfg.trainer.max_steps == 5
    assert cfg.trainer.lr == 1.0 and isinstance(cfg.trainer.lr, float)
    assert cfg.mean == (0.1, 0.2, 0.3)
    assert cfg.seed is None


def test_unknown_nested_key_names_key_file_and_near_miss(tmp_path):
    path = write(tmp_path, "name: a\ntrainer: {max_step: 5}\n")
    with pytest.raises(ConfigError) as err:
        load_config(Recipe, path)
    msg = str(err.value)
    assert "trainer.max_step" in msg and str(path) in msg and "max_steps" in msg


def test_wrong_type_is_rejected_with_the_key(tmp_path):
    path = write(tmp_path, "name: a\ntrainer: {max_steps: ten}\n")
    with pytest.raises(ConfigError, match=r"trainer\.max_steps.*integer"):
        load_config(Recipe, path)
    with pytest.raises(ConfigError, match=r"'mean' must have 3 items"):
        load_config(Recipe, write(tmp_path, "name: a\nmean: [1, 2]\n"))


def test_bool_is_not_an_int(tmp_path):
    with pytest.raises(ConfigError, match="max_steps"):
        load_config(Recipe, write(tmp_path, "name: a\ntrainer: {max_steps: true}\n"))


def test_literal_choice_suggests_the_meant_value(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'byol'"):
        load_config(Recipe, write(tmp_path, "name: a\nmethod: byl\n"))


def test_missing_required_key(tmp_path):
    with pytest.raises(ConfigError, match="missing required key 'name'"):
        load_config(Recipe, write(tmp_path, "method: byol\n"))


def test_overrides_parse_by_target_type(tmp_path):
    path = write(tmp_path, "name: a\n")
    cfg = load_config(
        Recipe,
        path,
        ["trainer.max_steps=7", "name=007", "tags=[x, y]", "trainer.precision=16", "seed=3"],
    )
    assert cfg.trainer.max_steps == 7
    assert cfg.name == "007"  # a string field keeps the text as written
    assert cfg.trainer.precision == "16"
    assert cfg.tags == ["x", "y"]
    assert cfg.seed == 3


def test_override_of_unknown_key_fails_before_work(tmp_path):
    path = write(tmp_path, "name: a\n")
    with pytest.raises(ConfigError, match=r"trainer\.max_stesp.*max_steps"):
        load_config(Recipe, path, ["trainer.max_stesp=3"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(Recipe, path, ["trainer.max_steps"])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(Recipe, write(tmp_path, "name: a\n"), ["trainer.max_steps=9"])
    out = save_config(cfg, tmp_path / "run" / "config.yaml")
    written = yaml.safe_load(out.read_text())
    assert written["trainer"]["max_steps"] == 9
    assert written["mean"] == [0.5, 0.5, 0.5]
    assert load_config(Recipe, out) == cfg


def test_an_empty_file_is_refused_not_run_with_defaults(tmp_path):
    """It used to run with every default, as if the file said nothing wrong."""
    for text in ("", "# only a comment\n"):
        with pytest.raises(ConfigError, match=r"recipe\.yaml: the file is empty"):
            load_config(Trainer, write(tmp_path, text))


def test_a_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, "name: x\ntrainer:\n  max_steps: [1, 2\nseed: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(Recipe, path)
    message = str(err.value)
    assert message.startswith(f"{path}: line 4, column 5: YAML syntax error: ")
    assert "flow sequence at line 3" in message
    with pytest.raises(ConfigError, match=r"override 'tags=\[a': the value is not valid YAML"):
        load_config(Recipe, write(tmp_path, "name: x\n"), ["tags=[a"])
