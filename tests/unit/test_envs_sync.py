"""pyproject.toml's dependencies and envs/deconflow.yaml list the same packages and versions."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
#: pip name -> conda-forge name where they differ
PIP_TO_CONDA = {"torch": "pytorch"}
#: conda entries with no pip counterpart in [project].dependencies
CONDA_ONLY = {"python", "pip"}

_SPEC = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*?)\s*$")


def _normalise_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _parse(requirement: str) -> tuple[str, str]:
    """'snakemake >=9.0, <10' -> ('snakemake', '<10,>=9.0') (clauses sorted, spaces dropped)."""
    match = _SPEC.match(requirement)
    assert match, f"cannot parse requirement {requirement!r}"
    name, spec = match.groups()
    assert ";" not in spec and "[" not in spec, f"markers/extras not handled: {requirement!r}"
    clauses = sorted(c.replace(" ", "") for c in spec.split(",") if c.strip())
    return _normalise_name(name), ",".join(clauses)


def _pip_dependencies() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out = {}
    for requirement in project["dependencies"]:
        name, spec = _parse(requirement)
        out[_normalise_name(PIP_TO_CONDA.get(name, name))] = spec
    return out


def _conda_dependencies() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "envs" / "deconflow.yaml").read_text())
    out = {}
    for entry in env["dependencies"]:
        if isinstance(entry, dict):  # the `pip:` sub-list (installs deconflow itself)
            assert set(entry) == {"pip"}, entry
            continue
        name, spec = _parse(str(entry))
        if name in CONDA_ONLY:
            continue
        assert name not in out, f"{name} listed twice in envs/deconflow.yaml"
        out[name] = spec
    return out


def test_parse_normalises_names_and_clause_order():
    assert _parse("Snakemake_Executor.plugin >=2.0, <3") == ("snakemake-executor-plugin", "<3,>=2.0")
    assert _parse("numpy") == ("numpy", "")


def test_every_pip_dependency_is_in_the_conda_env_with_the_same_version():
    pip, conda = _pip_dependencies(), _conda_dependencies()
    assert pip, "no dependencies parsed from pyproject.toml"
    missing = sorted(set(pip) - set(conda))
    assert not missing, f"in pyproject.toml but not envs/deconflow.yaml: {missing}"
    differing = {name: (pip[name], conda[name]) for name in pip if pip[name] != conda[name]}
    assert not differing, f"version specifiers differ (pyproject, conda): {differing}"


def test_every_conda_package_is_a_pip_dependency():
    pip, conda = _pip_dependencies(), _conda_dependencies()
    extra = sorted(set(conda) - set(pip))
    assert not extra, f"in envs/deconflow.yaml but not pyproject.toml: {extra}"


@pytest.mark.parametrize("pip_name, conda_name", sorted(PIP_TO_CONDA.items()))
def test_renamed_packages_use_the_conda_name(pip_name, conda_name):
    conda = _conda_dependencies()
    assert conda_name in conda and pip_name not in conda
