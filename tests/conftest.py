"""Fixtures shared across the test packages."""

from __future__ import annotations

import pytest
from moto_s3 import moto_s3


@pytest.fixture(scope="module")
def s3_endpoint():
    """A real S3 API on loopback (moto's server mode) with throwaway credentials."""
    with moto_s3() as endpoint:
        yield endpoint
