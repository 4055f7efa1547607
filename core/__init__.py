"""alscout: score camera frames for active learning of object detectors."""

from __future__ import annotations

__version__ = "0.1.0"
