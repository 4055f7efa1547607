"""Turn the bytes of one camera frame into an RGB array.

Encoded frames (JPEG, PNG) have their declared size read from the header before any
pixel is decoded, so a small file that claims a huge image (a decompression bomb) is
refused cheaply. A JPEG's scans are checked to hold every block before it is decoded
(:mod:`alscout.runtime.jpeg_scan`): libjpeg would fill cut or zeroed data with grey and
only warn. Every failure is an :class:`InvalidInputError` that names the problem.
"""

from __future__ import annotations

import struct

import cv2
import numpy as np

from alscout.errors import InvalidInputError
from alscout.runtime.jpeg_scan import check_jpeg_data

__all__ = [
    "warm_up",
    "ENCODINGS",
    "PIXEL_FORMATS",
    "MAX_PIXELS",
    "MAX_SIDE",
    "decode_frame",
    "frame_size",
    "checked_size",
]

ENCODINGS = ("jpeg", "png", "raw")
#: raw pixel format -> channels
PIXEL_FORMATS = {"rgb8": 3, "bgr8": 3, "gray8": 1}
#: Largest frame accepted: an 8K camera frame (7680 x 4320) fits.
MAX_PIXELS = 40_000_000
MAX_SIDE = 16384

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"
# Start-of-frame markers carry the image size; C4 (DHT), C8 (JPG) and CC (DAC) do not.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def decode_frame(
    data: bytes,
    *,
    encoding: str,
    width: int = 0,
    height: int = 0,
    pixel_format: str = "rgb8",
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Decode one frame to ``[H, W, 3]`` uint8 RGB.

    ``encoding``: "jpeg" | "png" | "raw". For "raw", ``width`` and ``height`` (pixels)
    are required and ``data`` holds ``height * width * channels`` bytes, row-major, in
    ``pixel_format`` "rgb8" | "bgr8" | "gray8" (gray is replicated to three channels).
    For encoded frames, a non-zero ``width``/``height`` must match the decoded size.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidInputError(f"frame data must be bytes, got {type(data).__name__}")
    if encoding not in ENCODINGS:
        raise InvalidInputError(f"unknown encoding {encoding!r}; use one of {ENCODINGS}")
    if width < 0 or height < 0:
        raise InvalidInputError(f"width and height must be >= 0, got {width}x{height}")
    if len(data) == 0:
        raise InvalidInputError(f"empty {encoding} frame")
    if encoding == "raw":
        return _decode_raw(bytes(data), width, height, pixel_format, max_pixels)
    declared_w, declared_h = frame_size(data, encoding)
    _check_size(declared_w, declared_h, max_pixels, encoding)
    if encoding == "jpeg":
        check_jpeg_data(data)
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if decoded is None or decoded.ndim != 3 or decoded.shape[2] != 3:
        raise InvalidInputError(f"corrupt {encoding} frame: the decoder could not read it")
    got_h, got_w = decoded.shape[:2]
    if (got_w, got_h) != (declared_w, declared_h):
        raise InvalidInputError(
            f"corrupt {encoding} frame: header says {declared_w}x{declared_h}, "
            f"pixels are {got_w}x{got_h}"
        )
    if (width and width != got_w) or (height and height != got_h):
        raise InvalidInputError(
            f"size mismatch: {encoding} frame is {got_w}x{got_h}, request says {width}x{height}"
        )
    return np.ascontiguousarray(decoded[:, :, ::-1])


def checked_size(
    data: bytes | bytearray | memoryview,
    encoding: str,
    *,
    width: int = 0,
    height: int = 0,
    max_pixels: int = MAX_PIXELS,
) -> tuple[int, int]:
    """(width, height) the frame decodes to, read without decoding, within the limits.

    JPEG and PNG: the header's size (:func:`frame_size`); "raw": ``width`` and ``height``.
    Raises :class:`InvalidInputError` when it cannot be read, or exceeds ``max_pixels``
    or :data:`MAX_SIDE` pixels per side: the check a server makes before it budgets
    and decodes a frame.
    """
    if encoding not in ENCODINGS:
        raise InvalidInputError(f"unknown encoding {encoding!r}; use one of {ENCODINGS}")
    if encoding == "raw":
        if width <= 0 or height <= 0:
            raise InvalidInputError("raw frames need width and height > 0")
    else:
        if len(data) == 0:
            raise InvalidInputError(f"empty {encoding} frame")
        width, height = frame_size(data, encoding)
    _check_size(width, height, max_pixels, encoding)
    return width, height


def frame_size(data: bytes | bytearray | memoryview, encoding: str) -> tuple[int, int]:
    """(width, height) declared by a JPEG or PNG header, without decoding pixels."""
    view = bytes(data[: 1 << 16]) if encoding == "png" else bytes(data)
    if encoding == "png":
        if not view.startswith(_PNG_SIGNATURE) or view[12:16] != b"IHDR" or len(view) < 24:
            raise InvalidInputError("corrupt png frame: no PNG signature and IHDR header")
        width, height = struct.unpack(">II", view[16:24])
        return int(width), int(height)
    if encoding == "jpeg":
        return _jpeg_size(view)
    raise InvalidInputError(f"cannot read the size of a {encoding!r} frame")


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """Walk the JPEG marker segments up to the first start-of-frame."""
    if not data.startswith(_JPEG_SOI):
        raise InvalidInputError("corrupt jpeg frame: no JPEG start-of-image marker")
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise InvalidInputError(f"corrupt jpeg frame: expected a marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _JPEG_SOF:
            if pos + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return int(width), int(height)
        if marker in (0xD9, 0xDA) or length < 2:
            break
        pos += 2 + length
    raise InvalidInputError("corrupt jpeg frame: no start-of-frame header with the image size")


def _check_size(width: int, height: int, max_pixels: int, what: str) -> None:
    if width < 1 or height < 1:
        raise InvalidInputError(f"corrupt {what} frame: size {width}x{height}")
    if width > MAX_SIDE or height > MAX_SIDE or width * height > max_pixels:
        raise InvalidInputError(
            f"{what} frame too large: {width}x{height} exceeds {max_pixels} pixels "
            f"or {MAX_SIDE} per side"
        )


def _decode_raw(
    data: bytes, width: int, height: int, pixel_format: str, max_pixels: int
) -> np.ndarray:
    if pixel_format not in PIXEL_FORMATS:
        raise InvalidInputError(
            f"unknown pixel format {pixel_format!r}; use one of {tuple(PIXEL_FORMATS)}"
        )
    if width == 0 or height == 0:
        raise InvalidInputError("raw frames need width and height > 0")
    _check_size(width, height, max_pixels, "raw")
    channels = PIXEL_FORMATS[pixel_format]
    expected = width * height * channels
    if len(data) != expected:
        raise InvalidInputError(
            f"size mismatch: raw {pixel_format} {width}x{height} needs {expected} bytes, "
            f"got {len(data)}"
        )
    pixels = np.frombuffer(data, dtype=np.uint8).reshape(height, width, channels)
    if pixel_format == "gray8":
        return np.repeat(pixels, 3, axis=2)
    if pixel_format == "bgr8":
        return np.ascontiguousarray(pixels[:, :, ::-1])
    return pixels.copy()


def warm_up() -> None:
    """Compile the decoders' Numba kernels (the JPEG scan check) now, not on a first frame.

    Without a disk cache the compile takes seconds; a server calls this before it
    reports SERVING, so its first JPEG frame is answered as fast as the others.
    """
    ok, encoded = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))
    if not ok:  # pragma: no cover  # OpenCV always encodes a small black image
        raise RuntimeError("OpenCV could not encode a JPEG")
    decode_frame(encoded.tobytes(), encoding="jpeg")
