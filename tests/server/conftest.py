"""Fixtures of tests/server; helpers live in server_harness.py next to this file.

pytest runs with --import-mode=importlib, which does not put test folders on
sys.path, so this folder is added here for ``import server_harness``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from server_harness import harness, served, stub

from alscout.server.client_progress import StreamProgress

__all__ = ["harness", "served", "stub", "resumes"]


@pytest.fixture
def resumes(monkeypatch) -> list[int]:
    """The ``last_decided`` of every resume request the clients build in this test."""
    seen: list[int] = []
    message = StreamProgress.resume_message

    def record_resume(self):
        seen.append(self.last_decided)
        return message(self)

    monkeypatch.setattr(StreamProgress, "resume_message", record_resume)
    return seen
