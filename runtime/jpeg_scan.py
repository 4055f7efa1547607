"""Check that a JPEG's scans hold the data its header promises, before decoding it.

libjpeg decodes a JPEG whose entropy-coded data was cut short or zeroed with only a
warning on stderr ("Corrupt JPEG data: premature end of data segment"), filling what is
missing with grey; OpenCV returns that image, and a scorer would score a frame nobody
took. :func:`check_jpeg_data` walks the file's marker segments and, for sequential
Huffman JPEGs (baseline and extended, SOF0/SOF1: what cameras and OpenCV write),
follows every scan's Huffman codes through every block of every MCU, without decoding
a coefficient. The data is refused when

- a scan ends (a marker, or the end of the file) before its last block,
- a Huffman code is not in its table, or a restart marker is missing or out of order,
- more than :data:`MAX_EXTRANEOUS_BYTES` bytes follow a scan's last block (libjpeg skips
  them with a warning; data that decodes in far fewer bytes than it holds is not what
  the encoder wrote), or
- the file has no end-of-image marker (truncated).

Progressive and other JPEG processes get the marker and end-of-image checks only.
Motion-JPEG frames without Huffman tables use the standard tables (ITU T.81 Annex K),
as libjpeg does. The walk costs a fraction of a decode and reads no pixel, so a
corrupt or zeroed file is refused before the expensive decode.
"""

from __future__ import annotations

import struct

import numpy as np

from alscout.errors import InvalidInputError
from alscout.runtime._numba import kernel

__all__ = ["check_jpeg_data", "MAX_EXTRANEOUS_BYTES"]

#: bytes after a scan's last block tolerated before its next marker (encoders write 0)
MAX_EXTRANEOUS_BYTES = 16

# Walk results (the kernel's status codes)
_OK, _PREMATURE_END, _BAD_CODE, _BAD_RESTART = 0, 1, 2, 3
_STATUS_TEXT = {
    _PREMATURE_END: "its data ends before the last block (premature end of data segment)",
    _BAD_CODE: "a Huffman code is not in its table",
    _BAD_RESTART: "a restart marker is missing or out of order",
}

# Standard Huffman tables of ITU T.81 Annex K.3 (counts of codes of length 1..16, values)
_STD_DC_BITS = (0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0)
_STD_DC_VALUES = tuple(range(12))
_STD_AC_LUMA_BITS = (0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D)
_STD_AC_LUMA_VALUES = bytes.fromhex(
    "01020300041105122131410613516107227114328191a1082342b1c11552d1f02433627282090a161718191a"
    "25262728292a3435363738393a434445464748494a535455565758595a636465666768696a737475767778"
    "797a838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7"
    "c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9fa"
)
_STD_DC_CHROMA_BITS = (0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0)
_STD_AC_CHROMA_BITS = (0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77)
_STD_AC_CHROMA_VALUES = bytes.fromhex(
    "000102031104052131061241510761711322328108144291a1b1c109233352f0156272d10a162434e125f1"
    "1718191a262728292a35363738393a434445464748494a535455565758595a636465666768696a73747576"
    "7778797a82838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4"
    "c5c6c7c8c9cad2d3d4d5d6d7d8d9dae2e3e4e5e6e7e8e9eaf2f3f4f5f6f7f8f9fa"
)

_SEQUENTIAL_HUFFMAN = (0xC0, 0xC1)
_OTHER_SOF = frozenset(range(0xC2, 0xD0)) - {0xC4, 0xC8, 0xCC}


class _Tables:
    """Huffman decoding tables (T.81 F.2.2.3) of the 4 DC and 4 AC slots, as arrays.

    Slot ``t`` (0-3 DC, 4-7 AC): ``maxcode[t, l]`` the largest code of length ``l``
    (-1: none), ``mincode[t, l]`` the smallest, ``valptr[t, l]`` the index in
    ``values[t]`` of its value; ``defined[t]`` whether the slot holds a table.
    """

    def __init__(self) -> None:
        self.maxcode = np.full((8, 18), -1, np.int32)
        self.mincode = np.zeros((8, 17), np.int32)
        self.valptr = np.zeros((8, 17), np.int32)
        self.values = np.zeros((8, 256), np.uint8)
        self.look_len = np.zeros((8, 256), np.int32)
        self.look_val = np.zeros((8, 256), np.int32)
        self.defined = [False] * 8

    def define(self, slot: int, bits: tuple[int, ...] | list[int], values: bytes) -> None:
        code = k = 0
        maxcode = np.full(18, -1, np.int32)
        for length in range(1, 17):
            n = bits[length - 1]
            if n:
                self.valptr[slot, length] = k
                self.mincode[slot, length] = code
                code += n
                k += n
                maxcode[length] = code - 1
            code <<= 1
        self.maxcode[slot] = maxcode
        self.values[slot, : len(values)] = np.frombuffer(values, np.uint8)
        self.look_len[slot] = 0
        for length in range(1, 9):  # codes of up to 8 bits: every 8-bit prefix they start
            for code in range(self.mincode[slot, length], maxcode[length] + 1):
                first = code << (8 - length)
                value = values[self.valptr[slot, length] + code - self.mincode[slot, length]]
                self.look_len[slot, first : first + (1 << (8 - length))] = length
                self.look_val[slot, first : first + (1 << (8 - length))] = value
        self.defined[slot] = True

    def with_standard(self) -> _Tables:
        """These tables, with the Annex K tables in the slots 0, 1, 4 and 5 left empty."""
        if all(self.defined[slot] for slot in _STANDARD_SLOTS):
            return self
        out = _Tables()
        for name in ("maxcode", "mincode", "valptr", "values", "look_len", "look_val"):
            mine, standard = getattr(self, name), getattr(_STANDARD, name)
            merged = mine.copy()
            for slot in _STANDARD_SLOTS:
                if not self.defined[slot]:
                    merged[slot] = standard[slot]
            setattr(out, name, merged)
        out.defined = [d or slot in _STANDARD_SLOTS for slot, d in enumerate(self.defined)]
        return out


_STANDARD_SLOTS = (0, 1, 4, 5)
_STANDARD = _Tables()
_STANDARD.define(0, _STD_DC_BITS, bytes(_STD_DC_VALUES))
_STANDARD.define(1, _STD_DC_CHROMA_BITS, bytes(_STD_DC_VALUES))
_STANDARD.define(4, _STD_AC_LUMA_BITS, _STD_AC_LUMA_VALUES)
_STANDARD.define(5, _STD_AC_CHROMA_BITS, _STD_AC_CHROMA_VALUES)


def check_jpeg_data(data: bytes | bytearray | memoryview) -> None:
    """Raise :class:`InvalidInputError` unless the JPEG's scans are complete (module doc).

    ``data``: a whole JPEG file. Header errors that a decoder reports itself (a missing
    table, an unknown process) are left to it.
    """
    buf = np.frombuffer(data, np.uint8)
    n = len(buf)
    if n < 4 or buf[0] != 0xFF or buf[1] != 0xD8:
        raise InvalidInputError("corrupt jpeg frame: no JPEG start-of-image marker")
    tables = _Tables()
    frame: tuple[int, int, int, dict[int, tuple[int, int]]] | None = None  # sof, X, Y, comps
    restart = 0
    pos = 2
    while True:
        pos = _next_marker(buf, pos)
        if pos < 0:
            raise InvalidInputError(
                "corrupt jpeg frame: no end-of-image marker: the file is truncated"
            )
        marker = int(buf[pos + 1])
        if marker == 0xD9:
            return
        if marker == 0xD8 or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 2
            continue
        if pos + 4 > n:
            raise InvalidInputError("corrupt jpeg frame: a marker segment is cut short")
        length = int(buf[pos + 2]) << 8 | int(buf[pos + 3])
        body = bytes(buf[pos + 4 : pos + 2 + length])
        if length < 2 or len(body) != length - 2:
            raise InvalidInputError("corrupt jpeg frame: a marker segment is cut short")
        pos += 2 + length
        if marker == 0xC4:
            _read_tables(tables, body)
        elif marker == 0xDD and len(body) >= 2:
            restart = struct.unpack(">H", body[:2])[0]
        elif marker in _SEQUENTIAL_HUFFMAN or marker in _OTHER_SOF:
            frame = _read_frame(marker, body)
        elif marker == 0xDA:
            if frame is None or frame[0] not in _SEQUENTIAL_HUFFMAN:
                continue  # progressive and others: the next marker search skips the scan
            end = _walk(buf, pos, body, frame, tables.with_standard(), restart)
            if end is not None:
                pos = end


def _walk(
    buf: np.ndarray,
    pos: int,
    header: bytes,
    frame: tuple[int, int, int, dict[int, tuple[int, int]]],
    tables: _Tables,
    restart: int,
) -> int | None:
    """Follow one sequential scan; the position after its last block, or None to skip."""
    _, width, height, components = frame
    if not header or height == 0:
        return None  # a DNL-defined height: left to the decoder
    count = header[0]
    if len(header) < 1 + 2 * count or count == 0:
        raise InvalidInputError("corrupt jpeg frame: a scan header is cut short")
    h_max = max(h for h, _ in components.values())
    v_max = max(v for _, v in components.values())
    dc: list[int] = []
    ac: list[int] = []
    for i in range(count):
        ident, selectors = header[1 + 2 * i], header[2 + 2 * i]
        if ident not in components:
            return None
        dc_slot, ac_slot = selectors >> 4, 4 + (selectors & 15)
        if dc_slot > 3 or ac_slot > 7 or not (tables.defined[dc_slot] and tables.defined[ac_slot]):
            return None  # a table the decoder will miss: it reports that itself
        h, v = components[ident]
        # non-interleaved (one component): one block per MCU, over the component's size
        blocks = 1 if count == 1 else h * v
        dc += [dc_slot] * blocks
        ac += [ac_slot] * blocks
    if count == 1:
        h, v = components[header[1]]
        cols = _ceil_div(_ceil_div(width * h, h_max), 8)
        n_mcus = cols * _ceil_div(_ceil_div(height * v, v_max), 8)
    else:
        n_mcus = _ceil_div(width, 8 * h_max) * _ceil_div(height, 8 * v_max)
    status, end = _walk_scan(
        buf,
        pos,
        np.asarray(dc, np.int64),
        np.asarray(ac, np.int64),
        n_mcus,
        restart,
        tables.maxcode,
        tables.mincode,
        tables.valptr,
        tables.values,
        tables.look_len,
        tables.look_val,
    )
    if status != _OK:
        raise InvalidInputError(f"corrupt jpeg frame: a scan is corrupt: {_STATUS_TEXT[status]}")
    marker = _next_marker(buf, end)
    extraneous = (len(buf) if marker < 0 else marker) - end
    if extraneous > MAX_EXTRANEOUS_BYTES:
        raise InvalidInputError(
            f"corrupt jpeg frame: {extraneous} bytes of a scan follow its last block "
            "(its data is not what the encoder wrote)"
        )
    return end


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _read_tables(tables: _Tables, body: bytes) -> None:
    at = 0
    while at < len(body):
        if at + 17 > len(body):
            raise InvalidInputError("corrupt jpeg frame: a Huffman table is cut short")
        kind, slot = body[at] >> 4, body[at] & 15
        bits = list(body[at + 1 : at + 17])
        total = sum(bits)
        values = body[at + 17 : at + 17 + total]
        if kind > 1 or slot > 3 or total > 256 or len(values) != total:
            raise InvalidInputError("corrupt jpeg frame: a Huffman table is malformed")
        tables.define(4 * kind + slot, bits, values)
        at += 17 + total


def _read_frame(marker: int, body: bytes) -> tuple[int, int, int, dict[int, tuple[int, int]]]:
    if len(body) < 6:
        raise InvalidInputError("corrupt jpeg frame: the start-of-frame header is cut short")
    _, height, width, count = struct.unpack(">BHHB", body[:6])
    if len(body) < 6 + 3 * count or count == 0:
        raise InvalidInputError("corrupt jpeg frame: the start-of-frame header is cut short")
    components = {}
    for i in range(count):
        ident, sampling = body[6 + 3 * i], body[7 + 3 * i]
        h, v = sampling >> 4, sampling & 15
        if not (1 <= h <= 4 and 1 <= v <= 4):
            raise InvalidInputError("corrupt jpeg frame: bad sampling factors")
        components[ident] = (h, v)
    return marker, width, height, components


def _next_marker(buf: np.ndarray, pos: int) -> int:
    """Index of the 0xFF of the next marker at or after ``pos`` that is not a restart
    marker, a stuffed 0xFF00 or fill; -1 when there is none."""
    n = len(buf)
    chunk = 1 << 12
    while pos + 1 < n:
        end = min(n, pos + chunk + 1)
        head, code = buf[pos : end - 1], buf[pos + 1 : end]
        found = np.flatnonzero(
            (head == 0xFF) & (code != 0x00) & (code != 0xFF) & ((code < 0xD0) | (code > 0xD7))
        )
        if len(found):
            return pos + int(found[0])
        pos = end - 1
        chunk = min(chunk * 4, 1 << 20)
    return -1


@kernel
def _fill(data, pos, acc, nacc):
    """Append whole bytes of entropy-coded data to the bit buffer ``acc`` (``nacc`` bits)
    until it holds more than 48 bits or a marker (or the end) comes: (pos, acc, nacc)."""
    n = len(data)
    while nacc <= 48 and pos < n:
        byte = data[pos]
        if byte == 0xFF:
            if pos + 1 >= n or data[pos + 1] != 0:
                break  # a marker: the scan's data ends here
            pos += 2
        else:
            pos += 1
        acc = (acc << 8) | int(byte)
        nacc += 8
    return pos, acc, nacc


@kernel
def _walk_scan(
    data, pos, dc, ac, n_mcus, restart, maxcode, mincode, valptr, values, look_len, look_val
):
    """Follow the Huffman codes of ``n_mcus`` MCUs of blocks with DC/AC table slots
    ``dc[b]``/``ac[b]``; restart markers every ``restart`` MCUs (0: none).

    ``data``: uint8 file bytes; ``pos``: where the scan's data starts. Codes of up to 8
    bits are read through ``look_len``/``look_val`` ``[slot, next 8 bits]`` (length 0:
    longer), longer ones bit by bit (T.81 F.16). Returns (status, position after the
    last block's last byte); status 0 ok, 1 premature end, 2 bad code, 3 bad restart.
    """
    n = len(data)
    acc = 0
    nacc = 0
    expected_rst = 0
    for mcu in range(n_mcus):
        if restart > 0 and mcu > 0 and mcu % restart == 0:
            if nacc >= 8:  # a whole byte unread: the interval ended early
                return 3, pos
            nacc = 0  # the rest of the byte is padding
            while pos + 1 < n and data[pos] == 0xFF and data[pos + 1] == 0xFF:
                pos += 1  # fill bytes before the marker
            if pos + 1 >= n or data[pos] != 0xFF:
                return 3, pos
            if data[pos + 1] != 0xD0 + expected_rst:
                return (1 if data[pos + 1] == 0xD9 else 3), pos
            pos += 2
            expected_rst = (expected_rst + 1) & 7
        for b in range(len(dc)):
            for k_slot in range(2):
                slot = dc[b] if k_slot == 0 else ac[b]
                k = 1
                while True:
                    # one Huffman code of table ``slot``
                    if nacc < 16:
                        pos, acc, nacc = _fill(data, pos, acc, nacc)
                    value = -1
                    if nacc >= 8:
                        look = (acc >> (nacc - 8)) & 0xFF
                        length = look_len[slot, look]
                        if length > 0:
                            nacc -= length
                            value = look_val[slot, look]
                    if value < 0:
                        code = 0
                        length = 0
                        while True:
                            if nacc == 0:
                                return 1, pos
                            length += 1
                            nacc -= 1
                            code = (code << 1) | ((acc >> nacc) & 1)
                            if code <= maxcode[slot, length]:
                                value = values[
                                    slot, valptr[slot, length] + code - mincode[slot, length]
                                ]
                                break
                            if length == 16:
                                return 2, pos
                    size = value & 15
                    if size:
                        if nacc < size:
                            pos, acc, nacc = _fill(data, pos, acc, nacc)
                            if nacc < size:
                                return 1, pos
                        nacc -= size
                    if k_slot == 0:
                        break  # the DC difference: then the AC codes
                    run = value >> 4
                    if size == 0 and run != 15:
                        break  # end of block
                    k += run + 1
                    if k >= 64:
                        break
    # the position after the last byte a block used: step back over whole unread bytes
    for _ in range(nacc // 8):
        pos -= 2 if pos >= 2 and data[pos - 1] == 0 and data[pos - 2] == 0xFF else 1
    return 0, pos
