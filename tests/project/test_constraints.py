"""Reproducible installs: every dependency the project declares is pinned in constraints.txt,
and the environment the tests run in has exactly the pinned versions."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def pins() -> dict[str, str]:
    found = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not pinned with =="
            found[canonicalize_name(name)] = version
    return found


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + [
        r for extra in project["optional-dependencies"].values() for r in extra
    ]
    return {canonicalize_name(Requirement(r).name) for r in lines}


def test_every_declared_dependency_is_pinned() -> None:
    assert declared() - set(pins()) == set()


def test_the_environment_has_the_pinned_versions() -> None:
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    drift = {
        name: (pinned, installed[name])
        for name, pinned in pins().items()
        if name in installed and installed[name] != pinned
    }
    assert drift == {}, "installed versions differ from constraints.txt (run `make`)"
    assert declared() - set(installed) == set()
