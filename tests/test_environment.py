"""environment.yml lists the same dependencies as pyproject.toml; torch stays pinned."""

import tomllib

import yaml
from packaging.requirements import Requirement

from textonly.core.config import PROJECT_ROOT


def _pyproject():
    with open(PROJECT_ROOT / "pyproject.toml", "rb") as f:
        return {Requirement(r).name.lower(): Requirement(r) for r in tomllib.load(f)["project"]["dependencies"]}


def _conda_pip():
    env = yaml.safe_load((PROJECT_ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return {Requirement(r).name.lower(): Requirement(r) for r in pip if not r.startswith("-e")}


def _torch_pin():
    lines = (PROJECT_ROOT / "constraints.txt").read_text().split()
    return next(Requirement(x) for x in lines if x.startswith("torch"))


def test_same_packages_in_both():
    assert set(_pyproject()) == set(_conda_pip())


def test_same_version_ranges_and_torch_pinned():
    pyproject, conda = _pyproject(), _conda_pip()
    for name, req in pyproject.items():
        if name == "torch":
            assert str(conda[name].specifier) == str(_torch_pin().specifier) == "==2.13.0"
            assert "2.13.0" in req.specifier  # the pin satisfies the project's range
        else:
            assert req.specifier == conda[name].specifier, name
