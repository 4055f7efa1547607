"""The layers hold by construction: every import in the package, read with ``ast``.

Each module belongs to the layer of its package (the longest prefix in :data:`LAYERS`);
every ``import`` and ``from ... import`` it holds, at the top or inside a function,
must land in its own layer or in one the table allows. Third-party packages a layer
must never load (the vehicle has no PyTorch) are listed in :data:`FORBIDDEN`, with the
one module allowed to import torch lazily (the reference backend).
"""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: layer -> the layers it may import, bottom to top (its own is always allowed)
LAYERS: dict[str, frozenset[str]] = {
    "alscout": frozenset(),  # the floor: errors, atomic files
    "alscout.storage": frozenset({"alscout"}),
    "alscout.runtime": frozenset({"alscout"}),
    "alscout.server": frozenset({"alscout", "alscout.storage", "alscout.runtime"}),
    # off-line scoring drives the server's decode, stream state and uploader over whole
    # recordings (so it sits above the server), on datacenter workers that install the
    # edge dependencies only (so, like the server, never the trainer or torch)
    "alscout.offline": frozenset(
        {"alscout", "alscout.storage", "alscout.runtime", "alscout.server"}
    ),
    "alscout.export": frozenset({"alscout", "alscout.runtime"}),
    "alscout.trainer": frozenset(
        {"alscout", "alscout.storage", "alscout.runtime", "alscout.export"}
    ),
    "alscout.apps": frozenset(
        {
            "alscout",
            "alscout.storage",
            "alscout.runtime",
            "alscout.server",
            "alscout.offline",
            "alscout.export",
            "alscout.trainer",
        }
    ),
}

#: layer -> top-level packages it never imports (the car runs without PyTorch)
FORBIDDEN: dict[str, frozenset[str]] = {
    "alscout": frozenset({"torch"}),
    "alscout.storage": frozenset({"torch"}),
    "alscout.runtime": frozenset({"torch"}),
    "alscout.server": frozenset({"torch"}),
    "alscout.offline": frozenset({"torch"}),
}
#: modules exempt from :data:`FORBIDDEN`: the PyTorch reference backend loads torch lazily
TORCH_EXEMPT = frozenset({"alscout.runtime.backends.torch_reference"})


@dataclass(frozen=True)
class Edge:
    module: str
    target: str
    line: int


def package_folders() -> dict[str, Path]:
    """Import name -> folder, from pyproject's ``package-dir`` (the one mapping)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mapping = pyproject["tool"]["setuptools"]["package-dir"]
    return {name: ROOT / folder for name, folder in mapping.items()}


def module_files() -> dict[str, Path]:
    """Every handwritten module: dotted name -> file (generated stubs excluded)."""
    modules: dict[str, Path] = {}
    for package, folder in package_folders().items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if "_proto" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join((package, *parts))
            if name in modules and modules[name] != path:
                continue  # a sub-package folder mapped on its own wins
            modules[name] = path
    # a folder mapped to its own name (alscout.runtime = runtime/) wins over the
    # same name reached through a parent folder
    for package, folder in package_folders().items():
        init = folder / "__init__.py"
        if init.exists():
            modules[package] = init
    return modules


def imports_of(module: str, path: Path) -> list[Edge]:
    """Every import in ``path``, resolved to absolute names (relative ones too)."""
    is_package = path.name == "__init__.py"
    base = module.split(".") if is_package else module.split(".")[:-1]
    edges = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            edges += [Edge(module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - (node.level - 1)]
                target = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            edges.append(Edge(module, target, node.lineno))
            # "from alscout import storage" names a layer in the imported names
            edges += [
                Edge(module, f"{target}.{alias.name}", node.lineno)
                for alias in node.names
                if f"{target}.{alias.name}" in LAYERS
            ]
    return edges


def layer_of(name: str) -> str | None:
    """The layer of an ``alscout`` module: the longest prefix in :data:`LAYERS`."""
    if name != "alscout" and not name.startswith("alscout."):
        return None
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in LAYERS:
            return prefix
    return None


def violations(modules: dict[str, Path]) -> list[str]:
    """Every edge the tables forbid, as ``file:line: module -> target (why)``."""
    found = []
    for module, path in sorted(modules.items()):
        own = layer_of(module)
        assert own is not None, f"{module} belongs to no layer: add it to LAYERS"
        for edge in imports_of(module, path):
            shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            where = f"{shown}:{edge.line}: {module} -> {edge.target}"
            target_layer = layer_of(edge.target)
            top = edge.target.split(".")[0]
            if target_layer is not None:
                if target_layer != own and target_layer not in LAYERS[own]:
                    found.append(f"{where} ({own} may not import {target_layer})")
            elif top in FORBIDDEN.get(own, ()) and module not in TORCH_EXEMPT:
                found.append(f"{where} ({own} never imports {top})")
    return found


def test_every_import_stays_inside_the_allowed_layers():
    modules = module_files()
    assert len(modules) > 100, "the tree was not found"
    assert violations(modules) == []


def test_every_package_is_a_layer_or_inside_one():
    for package in package_folders():
        assert layer_of(package) is not None, package


@pytest.mark.parametrize(
    ("module", "source", "layer"),
    [
        ("alscout.runtime.scoring", "import alscout.server\n", "alscout.server"),
        ("alscout.runtime.decode", "def f():\n    from alscout.trainer import model\n", "trainer"),
        ("alscout.server.service", "from alscout.apps import cli\n", "alscout.apps"),
        ("alscout.export.onnx", "from alscout.trainer.model import Detector\n", "trainer"),
        ("alscout.storage.sinks", "from ..server import uploader\n", "alscout.server"),
        ("alscout.server.models", "def f():\n    import torch\n", "torch"),
        ("alscout.offline.scorer", "from alscout.trainer.fleet import pool\n", "trainer"),
        ("alscout.server.sources", "from alscout.offline import run\n", "alscout.offline"),
    ],
)
def test_a_forbidden_edge_is_found(tmp_path, module, source, layer):
    path = tmp_path / "module.py"
    path.write_text(source)
    found = violations({module: path})
    assert len(found) == 1, found
    assert layer in found[0]
