"""Inputs the test packages share: the modules of tests/assets/ and the PETS09 data.

The fixtures over them (``tiny_model``, ``pets_dir``, ``pets_video``) are in
tests/conftest.py; import from here what a test needs outside a fixture: at collection
time, in a helper script, or written into its own folder.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ASSETS = Path(__file__).resolve().parent / "assets"
#: PETS 2009 S2L1 (``gt.txt``, ``vtest.avi``) in ../shared/data next to the checkout;
#: tests that need it skip when it is absent.
PETS09_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "pets09_s2l1"
PETS09_VIDEO = PETS09_DIR / "vtest.avi"


def load_asset(name: str) -> ModuleType:
    """A fresh copy of the module ``tests/assets/<name>.py``, loaded by its path."""
    path = ASSETS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"asset_{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the test asset {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_tiny_detector(path: Path) -> Path:
    """Write the tiny ONNX model of tests/assets/tiny_detector.py to ``path``; return it."""
    return load_asset("tiny_detector").write(path)


#: Python source that makes a child process refuse to import PyTorch or the trainer,
#: as the vehicle would: prepend it (after ``import sys``) to a ``python -c`` script.
REFUSE_TORCH = """
class RefuseTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch" or name.startswith("alscout.trainer"):
            raise ImportError(f"{name} is blocked: the vehicle has no PyTorch")
        return None

sys.meta_path.insert(0, RefuseTorch())
"""
