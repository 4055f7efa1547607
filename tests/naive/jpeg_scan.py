"""A plain bit-by-bit walk of a JPEG scan (T.81 F.2.2), written for clarity, not speed."""

from __future__ import annotations

import numpy as np


def naive_walk_scan(data, pos, dc, ac, n_mcus, restart, maxcode, mincode, valptr, values):
    """Same contract as ``alscout.runtime.jpeg_scan._walk_scan`` without its lookahead
    tables: (status, position after the last block's last byte)."""
    data = bytes(np.asarray(data, np.uint8))
    state = {"pos": pos, "byte": 0, "left": 0}

    def bit() -> int | None:
        if state["left"] == 0:
            p = state["pos"]
            if p >= len(data):
                return None
            if data[p] == 0xFF:
                if p + 1 >= len(data) or data[p + 1] != 0:
                    return None  # a marker
                state["pos"] = p + 2
            else:
                state["pos"] = p + 1
            state["byte"], state["left"] = data[p], 8
        state["left"] -= 1
        return (state["byte"] >> state["left"]) & 1

    def huffman(slot: int) -> int | str | None:
        code = 0
        for length in range(1, 17):
            b = bit()
            if b is None:
                return None
            code = (code << 1) | b
            if code <= maxcode[slot, length]:
                return int(values[slot, valptr[slot, length] + code - mincode[slot, length]])
        return "bad"

    def skip(count: int) -> bool:
        return all(bit() is not None for _ in range(count))

    expected = 0
    for mcu in range(n_mcus):
        if restart and mcu and mcu % restart == 0:
            state["left"] = 0
            p = state["pos"]
            while p + 1 < len(data) and data[p] == 0xFF and data[p + 1] == 0xFF:
                p += 1
            if p + 1 >= len(data) or data[p] != 0xFF:
                return 3, p
            if data[p + 1] != 0xD0 + expected:
                return (1 if data[p + 1] == 0xD9 else 3), p
            state["pos"] = p + 2
            expected = (expected + 1) % 8
        for b in range(len(dc)):
            size = huffman(dc[b])
            if size is None or size == "bad":
                return (1 if size is None else 2), state["pos"]
            if not skip(size):
                return 1, state["pos"]
            k = 1
            while k < 64:
                rs = huffman(ac[b])
                if rs is None or rs == "bad":
                    return (1 if rs is None else 2), state["pos"]
                run, size = rs >> 4, rs & 15
                if size == 0 and run != 15:
                    break
                k += run + 1
                if size and not skip(size):
                    return 1, state["pos"]
    return 0, state["pos"]
