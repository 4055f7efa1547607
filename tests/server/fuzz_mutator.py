"""The frame fuzzer's mutator: seeded ScoreStream messages, valid and malformed (issue #13).

A :class:`Mutator` yields the :class:`Event`\\ s of one fuzz stream: a message to send on
the stream (a serialized ``Frame``, possibly corrupted below the protobuf layer), a
unary ``Score`` of one, or a call action (half-close, cancel). The sequence depends on
``(seed, stream)`` alone, never on what the server answers, so a seed replays the same
mutations. Each event names its mutation (``group.detail``, e.g. ``id.dotdot``), so a
status the server answers can be traced to what provoked it.

Groups: ``valid`` (no mutation), ``id``, ``index``, ``enum``, ``dims``, ``metadata``,
``flags``, ``timestamp``, ``size``, ``encoding``, ``bytes`` (the serialized message),
``call`` (half-close, cancel) and ``unary`` (any of the frame mutations, sent to Score).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from alscout.server._proto import alscout_pb2 as pb

__all__ = ["GROUPS", "Event", "Mutator"]

INT64_MAX = 2**63 - 1
UINT32_MAX = 2**32 - 1
#: ids a camera or recording may be given by a confused or hostile client
ODD_IDS = (
    "", ".", "..", "...", "a..b", "../x", "./", "/", "a/b", "a\\b", "~", " ", "a b", "é",
    "récording", "录像", "🚗", "\x00", "a\x00b", "\n", "\t", "\x7f", "\u202e", "-", "_",
    "CON", "a" * 128, "a" * 129, "x" * 70_000,
)  # fmt: skip
#: (width, height) of the base images; a few odd ones
SIZES = ((1, 1), (8, 8), (16, 12), (31, 17), (64, 48), (128, 96), (200, 150), (320, 240))
#: resume tokens (FrameResult.resume_token) are in the protocol of this checkout
_HAS_TOKEN = "resume_token" in pb.ResumeRequest.DESCRIPTOR.fields_by_name
#: PNG IHDR / JPEG SOF sizes written over a small image's header
HEADER_SIZES = (
    (0, 0), (0, 5), (16384, 16384), (100_000, 1), (UINT32_MAX, 1), (2**31 - 1, 2**31 - 1),
    (16384, 2441), (6000, 6000),
)  # fmt: skip


@dataclass(frozen=True)
class Event:
    """One step of a fuzz stream.

    ``action``: "send" (``payload`` on the stream), "unary" (``payload`` to Score),
    "half_close" or "cancel" (the open call, if any). ``kind``: the mutation's name.
    """

    action: str
    kind: str
    payload: bytes = b""


@dataclass
class _Session:
    """The ids and next frame index the stream's well-formed frames use."""

    recording_id: str
    camera_id: str
    next_index: int = 0


class Mutator:
    """Seeded events of fuzz stream ``stream``; call :meth:`next` for each."""

    def __init__(self, seed: int, stream: int) -> None:
        self.rng = np.random.default_rng([seed, stream])
        self.stream = stream
        self.sessions = 0
        #: (recording, camera) -> the last resume_token the server sent for it; the
        #: runner fills it in, so a resume can carry a right token as well as wrong ones
        self.tokens: dict[tuple[str, str], str] = {}
        self.session = self._new_session()
        self.images = [self._image(*SIZES[i % len(SIZES)]) for i in range(12)]
        self.encoded = [self._encode(image) for image in self.images]
        frame_mutations: dict[str, tuple[float, Callable[[], tuple[str, bytes]]]] = {
            "valid": (30, self._valid),
            "id": (6, self._id),
            "index": (6, self._index),
            "enum": (4, self._enum),
            "dims": (4, self._dims),
            "metadata": (3, self._metadata),
            "flags": (6, self._flags),
            "timestamp": (2, self._timestamp),
            "size": (4, self._size),
            "encoding": (8, self._encoding),
            "bytes": (8, self._bytes),
        }
        self.frame_kinds = list(frame_mutations)
        self.frame_fns = [fn for _, fn in frame_mutations.values()]
        weights = np.array([w for w, _ in frame_mutations.values()], dtype=float)
        self.frame_p = weights / weights.sum()

    def next(self) -> Event:
        """The stream's next event."""
        roll = self.rng.random()
        if roll < 0.015:
            return Event("half_close", "call.half_close")
        if roll < 0.025:
            return Event("cancel", "call.cancel")
        if self.rng.random() < 0.005:  # a new recording, as a vehicle starts one
            self.session = self._new_session()
        kind, payload = self._frame()
        if roll < 0.06:
            return Event("unary", f"unary.{kind}", payload)
        return Event("send", kind, payload)

    # -- frames ------------------------------------------------------------------------

    def _frame(self) -> tuple[str, bytes]:
        pick = int(self.rng.choice(len(self.frame_fns), p=self.frame_p))
        detail, payload = self.frame_fns[pick]()
        return f"{self.frame_kinds[pick]}.{detail}", payload

    def _new_session(self) -> _Session:
        self.sessions += 1
        # "fz" ids never meet the clean stream's ("clean-..."); odd ids may meet each other
        return _Session(f"fz{self.stream}-{self.sessions}", f"cam{self.rng.integers(3)}")

    def _base(self, advance: bool = True) -> pb.Frame:
        """A well-formed frame of the session: next index, a JPEG, PNG or raw image."""
        s = self.session
        frame = pb.Frame(recording_id=s.recording_id, camera_id=s.camera_id)
        frame.frame_index = s.next_index
        if advance:
            s.next_index += 1 + (int(self.rng.integers(1, 20)) if self.rng.random() < 0.1 else 0)
        frame.capture_timestamp.FromNanoseconds(
            1_700_000_000_000_000_000 + 33_000_000 * s.next_index
        )
        frame.want_heatmap = bool(self.rng.random() < 0.2)
        i = int(self.rng.integers(len(self.images)))
        jpeg, png = self.encoded[i]
        form = self.rng.random()
        if form < 0.5:
            frame.encoded.data, frame.encoded.encoding = jpeg, pb.ENCODING_JPEG
        elif form < 0.75:
            frame.encoded.data, frame.encoded.encoding = png, pb.ENCODING_PNG
        else:
            image = self.images[i]
            frame.raw.data = image.tobytes()
            frame.raw.height, frame.raw.width = image.shape[:2]
            frame.raw.pixel_format = pb.PIXEL_FORMAT_RGB8
        return frame

    def _valid(self) -> tuple[str, bytes]:
        frame = self._base()
        return frame.WhichOneof("image") or "none", frame.SerializeToString()

    def _id(self) -> tuple[str, bytes]:
        frame = self._base(advance=False)
        value = ODD_IDS[int(self.rng.integers(len(ODD_IDS)))]
        field = "recording_id" if self.rng.random() < 0.5 else "camera_id"
        setattr(frame, field, value)
        name = {"": "empty", ".": "dot", "..": "dotdot"}.get(value, f"odd{len(value)}")
        return f"{field}.{name}", frame.SerializeToString()

    def _index(self) -> tuple[str, bytes]:
        frame = self._base(advance=False)
        last = self.session.next_index - 1
        choices = {
            "negative": -int(self.rng.integers(1, 1000)),
            "min": -(2**63),
            "huge": INT64_MAX,
            "repeated": last,
            "back": last - int(self.rng.integers(1, 10)),
            "zero": 0,
        }
        name = list(choices)[int(self.rng.integers(len(choices)))]
        frame.frame_index = choices[name]
        return name, frame.SerializeToString()

    def _enum(self) -> tuple[str, bytes]:
        frame = self._base()
        value = int(self.rng.choice([0, 3, 4, 99, -1, 2**31 - 1, -(2**31)]))
        if frame.WhichOneof("image") == "raw":
            frame.raw.pixel_format = value  # type: ignore[assignment]  # out of range on purpose
            return f"pixel_format.{value}", frame.SerializeToString()
        frame.encoded.encoding = value  # type: ignore[assignment]
        return f"encoding.{value}", frame.SerializeToString()

    def _dims(self) -> tuple[str, bytes]:
        frame = self._base()
        image = self.images[int(self.rng.integers(len(self.images)))]
        h, w = image.shape[:2]
        frame.raw.data = image.tobytes()
        frame.raw.pixel_format = pb.PIXEL_FORMAT_RGB8
        choices = {
            "plus_one": (w + 1, h),
            "minus_one": (w, max(h - 1, 0)),
            "swapped": (h, w) if h != w else (w, h + 1),
            "zero": (0, h),
            "huge": (UINT32_MAX, UINT32_MAX),
            "overflow": (65536, 65536),
            "gray": (w * 3, h),  # the right length for gray8, the wrong format
        }
        name = list(choices)[int(self.rng.integers(len(choices)))]
        frame.raw.width, frame.raw.height = choices[name]
        return name, frame.SerializeToString()

    def _metadata(self) -> tuple[str, bytes]:
        frame = self._base()
        pick = int(self.rng.integers(5))
        if pick == 0:
            frame.metadata.update({f"k{i}": "v" * 8 for i in range(2000)})
            return "many_keys", frame.SerializeToString()
        if pick == 1:
            frame.metadata["big"] = "v" * 262_144
            return "big_value", frame.SerializeToString()
        if pick == 2:
            frame.metadata["k" * 65_536] = "v"
            return "big_key", frame.SerializeToString()
        if pick == 3:
            frame.metadata.update({"": "", "\x00": "\x00", "../../etc": "🚗", "\u202e": "é"})
            return "odd", frame.SerializeToString()
        frame.metadata["file"] = "frame.jpg"
        return "plain", frame.SerializeToString()

    def _flags(self) -> tuple[str, bytes]:
        pick = int(self.rng.integers(8))
        frame = self._base(advance=pick in (0, 5, 6))
        last = int(self.rng.choice([-1, -2, 0, self.session.next_index - 1, INT64_MAX, -(2**63)]))
        if pick == 0:
            frame.end_of_stream = True
            return "end_with_image", frame.SerializeToString()
        if pick in (1, 2):  # a stream of this session, or one never opened
            if pick == 2:
                frame.camera_id = "never-opened"
            frame.ClearField("image")
            frame.end_of_stream = True
            return "end" if pick == 1 else "end_unopened", frame.SerializeToString()
        if pick == 3:
            frame.ClearField("image")
            frame.resume.last_decided_frame = last
            return f"resume.{self._token(frame)}", frame.SerializeToString()
        if pick == 4:
            frame.resume.last_decided_frame = last
            frame.end_of_stream = bool(self.rng.random() < 0.5)
            return f"resume_with_image.{self._token(frame)}", frame.SerializeToString()
        if pick == 5:
            frame.resumable = True
            return "resumable", frame.SerializeToString()
        if pick == 6:
            frame.want_heatmap = True
            return "heatmap", frame.SerializeToString()
        frame.ClearField("image")
        return "no_image", frame.SerializeToString()

    def _timestamp(self) -> tuple[str, bytes]:
        frame = self._base()
        stamp = frame.capture_timestamp
        pick = int(self.rng.integers(4))
        stamp.seconds, stamp.nanos = ((INT64_MAX, 0), (-(2**63), 0), (0, -1), (1, 2_000_000_000))[
            pick
        ]
        return ("seconds_max", "seconds_min", "nanos_negative", "nanos_big")[pick], (
            frame.SerializeToString()
        )

    def _size(self) -> tuple[str, bytes]:
        frame = self._base()
        kind = frame.WhichOneof("image")
        image = frame.raw if kind == "raw" else frame.encoded
        pick = int(self.rng.integers(8))
        if pick in (0, 1):
            image.data = b""
            return "empty", frame.SerializeToString()
        if pick in (2, 3, 4):
            data = image.data
            image.data = data[: int(self.rng.integers(1, max(len(data), 2)))]
            return "truncated", frame.SerializeToString()
        # one size mutation in 8 (one frame in ~500) is big: megabytes in the message limit
        small = pick in (5, 6)
        extra = int(self.rng.integers(1, 64)) << 10 if small else int(self.rng.integers(1, 5)) << 20
        if pick == 5 or (pick == 7 and kind != "raw"):  # a valid image trailed by garbage
            image.data = image.data + self.rng.bytes(extra)
            return (
                "trailing_garbage" if small else "big_trailing_garbage",
                frame.SerializeToString(),
            )
        if pick == 6:
            image.data = self.rng.bytes(extra)
            return "random", frame.SerializeToString()
        w = 1024  # a raw frame whose data matches a large size
        frame.raw.width, frame.raw.height = w, extra // (3 * w)
        frame.raw.data = bytes(3 * w * frame.raw.height)
        return "big_raw", frame.SerializeToString()

    def _encoding(self) -> tuple[str, bytes]:
        frame = self._base()
        i = int(self.rng.integers(len(self.images)))
        jpeg, png = self.encoded[i]
        pick = int(self.rng.integers(9))
        enc = frame.encoded
        if pick == 0:
            enc.data, enc.encoding = jpeg, pb.ENCODING_PNG
            return "jpeg_as_png", frame.SerializeToString()
        if pick == 1:
            enc.data, enc.encoding = png, pb.ENCODING_JPEG
            return "png_as_jpeg", frame.SerializeToString()
        if pick == 2:
            enc.data, enc.encoding = self._flip(jpeg, start=2), pb.ENCODING_JPEG
            return "corrupt_jpeg", frame.SerializeToString()
        if pick == 3:
            enc.data, enc.encoding = self._flip(png, start=8), pb.ENCODING_PNG
            return "corrupt_png", frame.SerializeToString()
        w, h = HEADER_SIZES[int(self.rng.integers(len(HEADER_SIZES)))]
        if pick == 4:
            enc.data, enc.encoding = _png_with_size(png, w, h), pb.ENCODING_PNG
            return f"png_ihdr_{w}x{h}", frame.SerializeToString()
        if pick == 5:
            w, h = min(w, 65535), min(h, 65535)
            enc.data, enc.encoding = _jpeg_with_size(jpeg, w, h), pb.ENCODING_JPEG
            return f"jpeg_sof_{w}x{h}", frame.SerializeToString()
        image = self.images[i]
        if pick == 6:  # valid PNGs of other kinds: 16-bit, gray, RGBA
            variant = int(self.rng.integers(3))
            pixels = (
                image.astype(np.uint16) * 257,
                cv2.cvtColor(image, cv2.COLOR_RGB2GRAY),
                cv2.cvtColor(image, cv2.COLOR_RGB2RGBA),
            )[variant]
            enc.data, enc.encoding = _imencode(".png", pixels), pb.ENCODING_PNG
            return ("png16", "png_gray", "png_rgba")[variant], frame.SerializeToString()
        if pick == 7:  # valid JPEGs of other kinds: grayscale, progressive
            gray = bool(self.rng.random() < 0.5)
            pixels = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if gray else image
            params = [] if gray else [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
            enc.data, enc.encoding = _imencode(".jpg", pixels, params), pb.ENCODING_JPEG
            return "jpeg_gray" if gray else "jpeg_progressive", frame.SerializeToString()
        h, w = image.shape[:2]  # raw data one row, one pixel or one byte off
        frame.raw.width, frame.raw.height = w, h
        frame.raw.pixel_format = pb.PIXEL_FORMAT_BGR8
        cut = int(self.rng.choice([1, 3, 3 * w]))
        data = image.tobytes()
        frame.raw.data = data[:-cut] if self.rng.random() < 0.5 else data + bytes(cut)
        return "raw_length", frame.SerializeToString()

    def _bytes(self) -> tuple[str, bytes]:
        """The serialized message itself broken: protobuf the server cannot parse, or can."""
        _, data = (self._valid, self._flags, self._index)[int(self.rng.integers(3))]()
        pick = int(self.rng.integers(8))
        if pick == 0:
            return "flip", self._flip(data, start=0)
        if pick == 1:
            return "truncate", data[: int(self.rng.integers(0, max(len(data), 1)))]
        if pick == 2:
            at = int(self.rng.integers(0, len(data) + 1))
            return "insert", data[:at] + self.rng.bytes(int(self.rng.integers(1, 16))) + data[at:]
        if pick == 3:
            return "garbage", self.rng.bytes(int(self.rng.integers(1, 2000)))
        if pick == 4:
            return "empty", b""
        if pick == 5:  # field 3 (frame_index) as a varint of 11 bytes: too long
            return "long_varint", data + b"\x18" + b"\xff" * 10 + b"\x01"
        if pick == 6:  # field 1 (recording_id) claims more bytes than follow
            return "short_length", data + b"\x0a\xff\xff\xff\x0f" + b"x" * 8
        # field 1 as invalid UTF-8: a string proto3 must refuse
        return "bad_utf8", data + b"\x0a\x04\xff\xfe\xc0\x80"

    # -- helpers -----------------------------------------------------------------------

    def _token(self, frame: pb.Frame) -> str:
        """Give a resume a token: none, the one the server sent, a wrong or an odd one.

        The draw never depends on what the server sent; only a "known" token's value does.
        """
        pick = int(self.rng.integers(4))
        wrong = self.rng.bytes(16).hex()
        odd = ODD_IDS[int(self.rng.integers(len(ODD_IDS)))]
        if pick == 0 or not _HAS_TOKEN:
            return "no_token"
        token = {1: self.tokens.get((frame.recording_id, frame.camera_id), ""), 2: wrong, 3: odd}
        frame.resume.resume_token = token[pick]  # type: ignore[attr-defined]  # newer stubs
        return ("", "known_token", "wrong_token", "odd_token")[pick]

    def _image(self, w: int, h: int) -> np.ndarray:
        """An RGB ``[h, w, 3]`` uint8 texture of random blocks."""
        small = self.rng.integers(0, 256, (max(h // 4, 1), max(w // 4, 1), 3), dtype=np.uint8)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)

    @staticmethod
    def _encode(image: np.ndarray) -> tuple[bytes, bytes]:
        bgr = image[:, :, ::-1]
        return _imencode(".jpg", bgr), _imencode(".png", bgr)

    def _flip(self, data: bytes, start: int) -> bytes:
        """``data`` with 1-8 random bytes at or after ``start`` replaced."""
        if len(data) <= start:
            return data
        out = bytearray(data)
        for at in self.rng.integers(start, len(out), int(self.rng.integers(1, 9))):
            out[int(at)] = int(self.rng.integers(256))
        return bytes(out)


def _imencode(ext: str, pixels: np.ndarray, params: list[int] | None = None) -> bytes:
    ok, data = cv2.imencode(ext, pixels, params or [])
    if not ok:
        raise RuntimeError(f"cv2 could not encode a {pixels.shape} {pixels.dtype} image as {ext}")
    return data.tobytes()


def _png_with_size(png: bytes, width: int, height: int) -> bytes:
    """``png`` with its IHDR size set to ``width`` x ``height`` and the chunk's CRC fixed."""
    ihdr = bytearray(png[12:29])  # b"IHDR" + 13 bytes of data
    ihdr[4:12] = struct.pack(">II", width, height)
    crc = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return png[:12] + bytes(ihdr) + crc + png[33:]


def _jpeg_with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` with its start-of-frame size set to ``width`` x ``height``."""
    for marker in (b"\xff\xc0", b"\xff\xc2", b"\xff\xc1"):
        at = jpeg.find(marker)
        if at >= 0:
            return jpeg[: at + 5] + struct.pack(">HH", height, width) + jpeg[at + 9 :]
    return jpeg


#: the mutation groups, for reports and the test's coverage check
GROUPS = (
    "valid", "id", "index", "enum", "dims", "metadata", "flags", "timestamp", "size",
    "encoding", "bytes", "call", "unary",
)  # fmt: skip
