"""deconflow.io imports downwards only (the layers of its package docstring), and nothing from the
rest of deconflow but ``deconflow.errors`` and the version string: read with ``ast``, every import
of every module, those inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import deconflow.io

PACKAGE = Path(deconflow.io.__file__).parent

#: bottom first: a module may import only the modules before it
ORDER = ["tables", "files", "genes", "references", "mixtures", "bulks", "methylation_calls", "data", "__init__"]

#: what io may import from the rest of deconflow: (module, name) pairs, name None for any
OUTSIDE = {("deconflow.errors", None), ("deconflow", "__version__")}


def _imports(path: Path) -> list[tuple[str, str | None, int]]:
    """(absolute module, imported name or None, line) of every deconflow import in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = ["deconflow", "io"][: 3 - node.level]  # a module of deconflow.io: level 1 is the package
                module = ".".join(parts + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found += [(module, alias.name, node.lineno) for alias in node.names]
    return [(module, name, line) for module, name, line in found if module.split(".")[0] == "deconflow"]


def _io_module(module: str, name: str | None) -> str | None:
    """The io module an import refers to (``from . import genes`` included), None if outside io."""
    if module == "deconflow.io" and name in ORDER:
        return name
    if module.startswith("deconflow.io."):
        return module.split(".")[2]
    if module == "deconflow.io":
        return "__init__"
    return None


def layer_violations(path: Path) -> list[str]:
    here = ORDER.index(path.stem)
    bad = []
    for module, name, line in _imports(path):
        target = _io_module(module, name)
        if target is None:
            if (module, None) not in OUTSIDE and (module, name) not in OUTSIDE:
                bad.append(f"{path.name}:{line} imports {module}.{name} from outside deconflow.io")
        elif target not in ORDER or ORDER.index(target) >= here:
            bad.append(f"{path.name}:{line} imports io.{target}, which is not below it")
    return bad


def test_every_io_module_has_a_layer():
    assert sorted(p.stem for p in PACKAGE.glob("*.py")) == sorted(ORDER)


@pytest.mark.parametrize("name", ORDER)
def test_io_imports_only_downwards(name):
    assert layer_violations(PACKAGE / f"{name}.py") == []


def test_an_upward_import_is_caught(tmp_path):
    for source, why in [
        ("from .data import open_wheel\n", "io.data"),
        ("def f():\n    from .bulks import read_bulk\n", "io.bulks"),
        ("from ..models import load_model\n", "outside"),
        ("from deconflow.training import train_from_files\n", "outside"),
        ("from . import references\n", "io.references"),
        ("from .genes import strip_version\n", "io.genes"),  # its own layer
    ]:
        path = tmp_path / "genes.py"
        path.write_text(source)
        assert any(why in v for v in layer_violations(path)), source
    (tmp_path / "genes.py").write_text("from ..errors import DeconflowError\nfrom .tables import read_table\n")
    assert layer_violations(tmp_path / "genes.py") == []

