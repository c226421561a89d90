"""The installed dependency set: no release known to be malicious, and no `lightning` meta-package.

`lightning` 2.6.2 and 2.6.3 on PyPI ran a credential stealer on import (advisory
GHSA-w37p-236h-pfx3; reports differ on whether `pytorch-lightning` 2.6.2/2.6.3 were affected, so
both are excluded in pyproject.toml).
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[2]
EXCLUDED = {"lightning": {"2.6.2", "2.6.3"}, "pytorch-lightning": {"2.6.2", "2.6.3"}}


def installed(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def bad_versions(found: dict[str, str | None]) -> list[str]:
    """`name==version` for each installed distribution whose version is excluded."""
    return [f"{n}=={v}" for n, v in sorted(found.items()) if v in EXCLUDED.get(n, set())]


def test_no_excluded_release_is_installed() -> None:
    assert bad_versions({name: installed(name) for name in EXCLUDED}) == []


def test_the_check_catches_an_excluded_release() -> None:
    assert bad_versions({"lightning": "2.6.3", "pytorch-lightning": "2.6.6"}) == [
        "lightning==2.6.3"
    ]


def _requirements() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]
    return project["dependencies"] + project["optional-dependencies"]["dev"]


def _name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()


def test_the_project_never_depends_on_the_lightning_meta_package() -> None:
    assert "lightning" not in {_name(r) for r in _requirements()}


@pytest.mark.parametrize("bad", sorted(EXCLUDED["pytorch-lightning"]))
def test_pyproject_excludes_the_bad_releases(bad: str) -> None:
    spec = next(r for r in _requirements() if _name(r) == "pytorch-lightning")
    assert f"!={bad}" in spec


def test_constraints_pin_every_direct_dependency() -> None:
    pins = {}
    for line in (REPO / "constraints.txt").read_text("utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, pinned = line.partition("==")
            pins[name.strip().lower()] = pinned.strip()
    direct = {_name(r) for r in _requirements()}
    assert direct <= set(pins), sorted(direct - set(pins))
    for name in direct:  # the pinned version is the one installed
        assert installed(name) == pins[name], name
