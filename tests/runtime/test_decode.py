from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest

from alscout.errors import InvalidInputError
from alscout.runtime.decode import decode_frame, frame_size


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    """A smooth RGB test image (JPEG keeps smooth images close), 40 x 56."""
    y, x = np.mgrid[0:40, 0:56]
    return np.stack([x * 4, y * 6, 255 - x * 2], axis=-1).astype(np.uint8)


def encode(image_rgb: np.ndarray, ext: str, params=()) -> bytes:
    ok, data = cv2.imencode(ext, image_rgb[:, :, ::-1], list(params))
    assert ok
    return data.tobytes()


def test_png_round_trip_is_exact_and_rgb(rgb):
    out = decode_frame(encode(rgb, ".png"), encoding="png")
    assert out.dtype == np.uint8
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


def test_jpeg_round_trip_keeps_channel_order(rgb):
    out = decode_frame(encode(rgb, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 98]), encoding="jpeg")
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb).mean() < 3
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    decoded = decode_frame(encode(red, ".jpg"), encoding="jpeg", width=16, height=16)
    assert decoded[8, 8, 0] > 240 and decoded[8, 8, 2] < 15


def test_progressive_jpeg_size_is_read_from_its_header(rgb):
    data = encode(rgb, ".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert frame_size(data, "jpeg") == (56, 40)
    assert decode_frame(data, encoding="jpeg").shape == (40, 56, 3)


def test_raw_formats(rgb):
    h, w = rgb.shape[:2]
    np.testing.assert_array_equal(
        decode_frame(rgb.tobytes(), encoding="raw", width=w, height=h), rgb
    )
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    np.testing.assert_array_equal(
        decode_frame(bgr.tobytes(), encoding="raw", width=w, height=h, pixel_format="bgr8"), rgb
    )
    gray = rgb[:, :, 1].copy()
    out = decode_frame(gray.tobytes(), encoding="raw", width=w, height=h, pixel_format="gray8")
    assert out.shape == (h, w, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


def test_raw_output_does_not_alias_the_input_buffer(rgb):
    data = bytearray(rgb.tobytes())
    out = decode_frame(data, encoding="raw", width=56, height=40)
    data[0] = (data[0] + 1) % 256
    assert out[0, 0, 0] == rgb[0, 0, 0]
    out[0, 0, 0] = 7  # writable


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(encoding="raw", width=10, height=10), "size mismatch"),
        (dict(encoding="raw", width=0, height=10), "need width and height"),
        (dict(encoding="raw", width=4, height=4, pixel_format="yuv420"), "unknown pixel format"),
        (dict(encoding="webp"), "unknown encoding"),
        (dict(encoding="raw", width=-1, height=4), ">= 0"),
    ],
)
def test_bad_raw_requests(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        decode_frame(b"\x00" * 48, **kwargs)


def test_encoded_size_must_match_the_request(rgb):
    with pytest.raises(InvalidInputError, match="size mismatch: png frame is 56x40"):
        decode_frame(encode(rgb, ".png"), encoding="png", width=64, height=40)


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_truncated_and_garbled_frames_are_corrupt(rgb, ext):
    data = encode(rgb, ext)
    encoding = "png" if ext == ".png" else "jpeg"
    with pytest.raises(InvalidInputError, match="corrupt"):
        decode_frame(data[: len(data) // 2], encoding=encoding)
    with pytest.raises(InvalidInputError, match="corrupt"):
        decode_frame(b"\x00" * 100, encoding=encoding)
    with pytest.raises(InvalidInputError, match="empty"):
        decode_frame(b"", encoding=encoding)


def test_wrong_encoding_label_is_corrupt(rgb):
    with pytest.raises(InvalidInputError, match="corrupt jpeg"):
        decode_frame(encode(rgb, ".png"), encoding="jpeg")


def png_header_claiming(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def jpeg_header_claiming(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof + b"\xff\xd9"


@pytest.mark.parametrize(
    ("header", "encoding"),
    [(png_header_claiming, "png"), (jpeg_header_claiming, "jpeg")],
)
def test_huge_declared_sizes_are_refused_before_decoding(header, encoding):
    data = header(60000, 60000)
    assert frame_size(data, encoding) == (60000, 60000)
    with pytest.raises(InvalidInputError, match="too large"):
        decode_frame(data, encoding=encoding)
    with pytest.raises(InvalidInputError, match="too large"):
        decode_frame(header(4000, 3000), encoding=encoding, max_pixels=1_000_000)


def test_raw_too_large_is_refused_before_reading():
    with pytest.raises(InvalidInputError, match="too large"):
        decode_frame(b"\x00", encoding="raw", width=20000, height=20000)


def test_non_bytes_data_is_refused():
    with pytest.raises(InvalidInputError, match="bytes"):
        decode_frame(np.zeros(10, np.uint8), encoding="raw", width=1, height=1)  # type: ignore[arg-type]


# -- JPEGs whose scan data was cut or zeroed (libjpeg fills them with grey) -------------


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    """A textured RGB frame 96 x 128: its JPEG scans are a few KB."""
    rng = np.random.default_rng(7)
    return cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (128, 96))


def scan_data(jpeg: bytes) -> tuple[int, int]:
    """(start, end) of the entropy-coded data of a one-scan JPEG: after SOS, before EOI."""
    sos = jpeg.index(b"\xff\xda")
    return sos + 2 + int.from_bytes(jpeg[sos + 2 : sos + 4], "big"), jpeg.rindex(b"\xff\xd9")


def zeroed_scan(jpeg: bytes) -> bytes:
    start, end = scan_data(jpeg)
    return jpeg[:start] + bytes(end - start) + jpeg[end:]


GOOD_JPEGS = {
    "default": (),
    "quality 100": (cv2.IMWRITE_JPEG_QUALITY, 100),
    "quality 5": (cv2.IMWRITE_JPEG_QUALITY, 5),
    "optimized tables": (cv2.IMWRITE_JPEG_OPTIMIZE, 1),
    "restart intervals": (cv2.IMWRITE_JPEG_RST_INTERVAL, 2),
    "progressive": (cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
    "4:4:4": (cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444),
    "4:2:2": (cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422),
}


@pytest.mark.parametrize("params", GOOD_JPEGS.values(), ids=GOOD_JPEGS.keys())
def test_good_jpegs_from_opencv_pass_the_scan_check(scene, params):
    for image in (scene, scene[:37, :53], scene[:, :, :1]):  # odd sizes; gray
        out = decode_frame(encode(image, ".jpg", params), encoding="jpeg")
        assert out.shape[:2] == image.shape[:2]


def test_a_motion_jpeg_frame_without_huffman_tables_passes(scene):
    """MJPEG cameras leave out the standard tables; decoders supply them."""
    data = encode(scene, ".jpg")
    out = bytearray()
    pos = 2
    out += data[:2]
    while data[pos + 1] != 0xDA:  # copy every segment up to the scan but the DHTs
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if data[pos + 1] != 0xC4:
            out += data[pos : pos + 2 + length]
        pos += 2 + length
    out += data[pos:]
    assert b"\xff\xc4" not in bytes(out[: out.index(b"\xff\xda")])
    decoded = decode_frame(bytes(out), encoding="jpeg")
    assert np.array_equal(decoded, decode_frame(data, encoding="jpeg"))


def test_a_jpeg_with_zeroed_scan_data_is_corrupt(scene):
    for params in ((), (cv2.IMWRITE_JPEG_OPTIMIZE, 1), (cv2.IMWRITE_JPEG_RST_INTERVAL, 2)):
        with pytest.raises(InvalidInputError, match="corrupt jpeg frame"):
            decode_frame(zeroed_scan(encode(scene, ".jpg", params)), encoding="jpeg")


def test_a_truncated_jpeg_is_corrupt_with_or_without_an_end_marker(scene):
    data = encode(scene, ".jpg")
    start, end = scan_data(data)
    middle = start + (end - start) // 2
    for cut in (data[:middle], data[:middle] + b"\xff\xd9", data[:-2]):
        with pytest.raises(InvalidInputError, match="corrupt jpeg frame"):
            decode_frame(cut, encoding="jpeg")


def test_warm_up_compiles_the_jpeg_scan_before_any_frame():
    """A fresh process: after warm_up the scan kernel has its machine code, so the
    server's first JPEG frame does not wait for Numba (the server calls it at start)."""
    code = (
        "from alscout.runtime import jpeg_scan; from alscout.runtime.decode import warm_up;"
        "assert not jpeg_scan._walk_scan.signatures; warm_up();"
        "assert jpeg_scan._walk_scan.signatures"
    )
    env = {**os.environ, "NUMBA_DISABLE_JIT": "0"}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300, env=env)
