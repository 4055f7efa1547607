"""The scan walk of alscout.runtime.jpeg_scan against a plain bit-by-bit walk (private API)."""

from __future__ import annotations

import contextlib

import cv2
import numpy as np
import pytest

from alscout.errors import InvalidInputError
from alscout.runtime import jpeg_scan

from naive.jpeg_scan import naive_walk_scan


def _jpegs() -> dict[str, bytes]:
    rng = np.random.default_rng(3)
    smooth = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (160, 120))
    noisy = rng.integers(0, 256, (72, 88, 3), dtype=np.uint8)
    params = {
        "default": [],
        "q100": [cv2.IMWRITE_JPEG_QUALITY, 100],
        "optimized": [cv2.IMWRITE_JPEG_OPTIMIZE, 1],
        "restarts": [cv2.IMWRITE_JPEG_RST_INTERVAL, 1],
        "444": [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444],
    }
    out = {}
    for image_name, image in (("smooth", smooth), ("noisy", noisy), ("gray", noisy[:, :, :1])):
        for name, p in params.items():
            out[f"{image_name}-{name}"] = cv2.imencode(".jpg", image, p)[1].tobytes()
    return out


JPEGS = _jpegs()


def _damaged(data: bytes, seed: int) -> list[bytes]:
    """Flipped bytes, a zeroed stretch and a cut in the scan data of ``data``."""
    rng = np.random.default_rng(seed)
    start = data.index(b"\xff\xda") + 2 + int.from_bytes(data[data.index(b"\xff\xda") + 2 :][:2])
    end = data.rindex(b"\xff\xd9")
    out = []
    for _ in range(6):
        b = bytearray(data)
        at = int(rng.integers(start, end))
        b[at] = int(rng.integers(0, 256)) if b[at] != 0xFF and b[at - 1] != 0xFF else b[at]
        out.append(bytes(b))
    at = int(rng.integers(start, end - 16))
    out.append(data[:at] + bytes(16) + data[at + 16 :])
    out.append(data[: (start + end) // 2] + b"\xff\xd9")
    return out


@pytest.mark.parametrize("name", sorted(JPEGS))
def test_the_walk_agrees_with_the_naive_walk_on_good_and_damaged_scans(monkeypatch, name):
    compared = []
    kernel = jpeg_scan._walk_scan

    def both(data, pos, dc, ac, n_mcus, restart, maxcode, mincode, valptr, values, *look):
        got = kernel(data, pos, dc, ac, n_mcus, restart, maxcode, mincode, valptr, values, *look)
        want = naive_walk_scan(data, pos, dc, ac, n_mcus, restart, maxcode, mincode, valptr,
                               values)  # fmt: skip
        assert got[0] == want[0]
        if want[0] == 0:
            assert got[1] == want[1]
        compared.append(want[0])
        return got

    monkeypatch.setattr(jpeg_scan, "_walk_scan", both)
    jpeg_scan.check_jpeg_data(JPEGS[name])
    assert compared == [0]
    for damaged in _damaged(JPEGS[name], seed=len(name)):
        with contextlib.suppress(InvalidInputError):
            jpeg_scan.check_jpeg_data(damaged)
    assert len(compared) > 1


def test_the_standard_tables_equal_the_ones_opencv_writes():
    data = JPEGS["smooth-default"]
    tables = jpeg_scan._Tables()
    pos = data.index(b"\xff\xc4")
    while data[pos : pos + 2] == b"\xff\xc4":
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        jpeg_scan._read_tables(tables, data[pos + 4 : pos + 2 + length])
        pos += 2 + length
    standard = jpeg_scan._Tables().with_standard()
    for slot in (0, 1, 4, 5):
        assert tables.defined[slot]
        for name in ("maxcode", "mincode", "valptr", "look_len", "look_val"):
            mine, theirs = getattr(tables, name)[slot], getattr(standard, name)[slot]
            np.testing.assert_array_equal(mine, theirs)


def test_markers_and_garbage_outside_the_scans_are_read_as_the_decoder_does():
    good = JPEGS["smooth-default"]
    with pytest.raises(InvalidInputError, match="start-of-image"):
        jpeg_scan.check_jpeg_data(b"\x00" + good)
    with pytest.raises(InvalidInputError, match="cut short"):
        jpeg_scan.check_jpeg_data(good[: good.index(b"\xff\xc0") + 6])
    jpeg_scan.check_jpeg_data(good + b"trailing bytes after the end-of-image marker")
