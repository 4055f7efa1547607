"""Type-check the ``alscout`` package under its real module names: ``make lint`` runs it.

setuptools' ``package-dir`` maps the top-level folders onto one namespace (``core/`` is
``alscout``, ``runtime/`` is ``alscout.runtime``, ...). mypy knows nothing of that
mapping and cannot follow the editable install's import hook, so ``mypy core runtime``
would see ``runtime.scoring`` instead of ``alscout.runtime.scoring`` and resolve every
``import alscout...`` to nothing. This script lays out, from ``pyproject.toml`` alone, a
tree of symlinks under ``build/typecheck/`` that looks like the installed package
(``build/typecheck/alscout/runtime -> ../../../runtime``), runs mypy on it with the
configuration in ``pyproject.toml``, and rewrites every reported path back to the file
in the checkout (``build/typecheck/alscout/runtime/scoring.py`` -> ``runtime/scoring.py``).

    python tools/typecheck.py [extra mypy arguments]

Exit status: mypy's (0 clean, 1 errors, 2 a usage or crash).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TREE = REPO / "build" / "typecheck"
_SKIP = {"__pycache__"}
# mypy's "path:line[:col]: severity: ..." and its "path: note: ..." lines.
_REPORTED_PATH = re.compile(r"^(?P<path>[^:\s][^:]*\.pyi?)(?=:)")


def package_dirs(pyproject: Path = REPO / "pyproject.toml") -> dict[str, Path]:
    """``[tool.setuptools] package-dir`` as import name -> folder in the checkout."""
    with pyproject.open("rb") as f:
        config = tomllib.load(f)
    mapping = config["tool"]["setuptools"]["package-dir"]
    return {name: (pyproject.parent / folder).resolve() for name, folder in mapping.items()}


def build_tree(mapping: Mapping[str, Path], tree: Path = TREE) -> Path:
    """Lay out ``tree`` as the installed packages, in symlinks; returns the root package dir.

    A package none of whose subpackages is mapped elsewhere becomes one link to its
    folder; a package with mapped subpackages (``alscout`` itself) becomes a real folder
    holding one link per entry of its source folder plus the mapped subpackages.
    """
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    for name in sorted(mapping, key=lambda n: n.count(".")):
        source = mapping[name]
        dest = tree.joinpath(*name.split("."))
        nested = {
            other.split(".")[name.count(".") + 1]
            for other in mapping
            if other.startswith(name + ".")
        }
        if not nested:
            dest.symlink_to(os.path.relpath(source, dest.parent), target_is_directory=True)
            continue
        dest.mkdir()
        for entry in sorted(source.iterdir()):
            if entry.name in _SKIP:
                continue
            if entry.name in nested:
                raise SystemExit(
                    f"{entry}: clashes with a package mapped in pyproject.toml's package-dir"
                )
            (dest / entry.name).symlink_to(os.path.relpath(entry, dest))
    roots = {name.split(".")[0] for name in mapping}
    if len(roots) != 1:
        raise SystemExit(f"expected one top-level package in package-dir, got {sorted(roots)}")
    return tree / roots.pop()


def to_checkout_path(line: str, cwd: Path = REPO) -> str:
    """Rewrite a path in ``tree`` at the start of a mypy output line to the real file."""
    match = _REPORTED_PATH.match(line)
    if match is None:
        return line
    path = Path(match["path"])
    absolute = path if path.is_absolute() else cwd / path
    if TREE not in absolute.parents:
        return line
    real = Path(os.path.realpath(absolute))
    try:
        shown = str(real.relative_to(cwd))
    except ValueError:
        shown = str(real)
    return shown + line[match.end() :]


def main(argv: list[str]) -> int:
    """Build the tree, run mypy on it, print its report with checkout paths."""
    package = build_tree(package_dirs())
    command = [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(REPO / "pyproject.toml"),
        *argv,
        os.path.relpath(package, REPO),
        os.path.relpath(Path(__file__).resolve(), REPO),  # this script too
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    for line in result.stdout.splitlines():
        sys.stdout.write(to_checkout_path(line) + "\n")
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
