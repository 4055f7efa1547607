"""Fixtures of tests/server; helpers live in server_harness.py next to this file.

pytest runs with --import-mode=importlib, which does not put test folders on
sys.path, so this folder is added here for ``import server_harness``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from server_harness import harness, served, stub

__all__ = ["harness", "served", "stub"]
