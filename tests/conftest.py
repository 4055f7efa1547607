"""Fixtures shared across the test packages."""

from __future__ import annotations

from pathlib import Path

import pytest
from shared_inputs import PETS09_DIR, PETS09_VIDEO, write_tiny_detector


@pytest.fixture(scope="module")
def s3_endpoint():
    """A real S3 API on loopback (moto's server mode) with throwaway credentials.

    Imported here, not at the top: a GPU machine runs the gpu-marked tests without the
    dev extras (boto3, moto)."""
    from moto_s3 import moto_s3

    with moto_s3() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The tiny contract-following ONNX model of tests/assets/tiny_detector.py (read only)."""
    return write_tiny_detector(tmp_path_factory.mktemp("tiny") / "tiny.onnx")


@pytest.fixture(scope="session")
def pets_dir() -> Path:
    """The PETS 2009 S2L1 folder (``gt.txt``, ``vtest.avi``); the test skips without it."""
    if not PETS09_DIR.is_dir():
        pytest.skip(f"the PETS09 data is not at {PETS09_DIR} (../shared/data/pets09_s2l1)")
    return PETS09_DIR


@pytest.fixture(scope="session")
def pets_video(pets_dir: Path) -> Path:
    """The PETS 2009 S2L1 video (795 frames of 480x360); the test skips without it."""
    if not PETS09_VIDEO.is_file():
        pytest.skip(f"the PETS09 video is not at {PETS09_VIDEO}")
    return PETS09_VIDEO
