"""Bit-level reading of H.264/H.265 RBSP data (Exp-Golomb codes, fixed-width fields)."""

from __future__ import annotations


class BitstreamError(ValueError):
    """A parameter set or header is truncated or carries an impossible value."""


def unescape_rbsp(nal: bytes) -> bytes:
    """Remove emulation-prevention bytes (``00 00 03`` becomes ``00 00``).

    The encoder inserts an ``03`` after two zero bytes whenever the next byte
    would be 0 to 3, so a payload never contains a start code; parsers must
    drop it before reading fields.
    """
    if b"\x00\x00\x03" not in nal:
        return nal
    out = bytearray()
    zeros = 0
    for byte in nal:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


class BitReader:
    """Read big-endian bit fields from an RBSP, most significant bit first.

    Every read past the end raises :class:`BitstreamError`, so a truncated or
    garbage parameter set ends in a clear exception instead of wrong values.
    """

    __slots__ = ("_data", "_pos", "_end")

    def __init__(self, data: bytes, start_byte: int = 0) -> None:
        self._data = data
        self._pos = start_byte * 8
        self._end = len(data) * 8

    @property
    def bits_left(self) -> int:
        return self._end - self._pos

    def u(self, count: int) -> int:
        """Read an unsigned field of ``count`` bits."""
        if count == 0:
            return 0
        if self._pos + count > self._end:
            raise BitstreamError(f"read of {count} bits past the end at bit {self._pos}")
        value = 0
        pos = self._pos
        data = self._data
        for _ in range(count):
            value = (value << 1) | ((data[pos >> 3] >> (7 - (pos & 7))) & 1)
            pos += 1
        self._pos = pos
        return value

    def flag(self) -> bool:
        return self.u(1) == 1

    def skip(self, count: int) -> None:
        if self._pos + count > self._end:
            raise BitstreamError(f"skip of {count} bits past the end at bit {self._pos}")
        self._pos += count

    def ue(self) -> int:
        """Read an unsigned Exp-Golomb code, ue(v)."""
        leading_zeros = 0
        while self.u(1) == 0:
            leading_zeros += 1
            if leading_zeros > 31:
                raise BitstreamError("Exp-Golomb code longer than 32 bits")
        return (1 << leading_zeros) - 1 + self.u(leading_zeros)

    def se(self) -> int:
        """Read a signed Exp-Golomb code, se(v)."""
        code = self.ue()
        return (code + 1) // 2 if code & 1 else -(code // 2)

    def ue_max(self, maximum: int, name: str) -> int:
        """Read ue(v) and raise when it exceeds the limit the standard sets."""
        value = self.ue()
        if value > maximum:
            raise BitstreamError(f"{name}={value} exceeds {maximum}")
        return value
