"""Annex B byte streams: NAL units separated by ``00 00 01`` or ``00 00 00 01`` start codes."""

from __future__ import annotations

START_CODE = b"\x00\x00\x01"


def split_annexb(data: bytes) -> list[bytes]:
    """Split an Annex B byte stream into NAL units without start codes.

    Trailing zero bytes before a start code (the 4-byte form, or
    trailing_zero_8bits) are removed, and empty units are dropped.
    """
    nals: list[bytes] = []
    start = data.find(START_CODE)
    if start < 0:
        return [data] if data else []
    if start > 0 and data[:start].strip(b"\x00"):
        # Bytes before the first start code are a unit of their own.
        nals.append(data[:start].rstrip(b"\x00"))
    pos = start + 3
    while True:
        next_start = data.find(START_CODE, pos)
        end = len(data) if next_start < 0 else next_start
        nal = data[pos:end].rstrip(b"\x00") if next_start >= 0 else data[pos:end]
        if nal:
            nals.append(nal)
        if next_start < 0:
            return nals
        pos = next_start + 3


def contains_start_code(nal: bytes) -> bool:
    """Return True when a NAL unit carries an Annex B start code inside it.

    Emulation prevention keeps ``00 00 01`` out of every valid NAL payload,
    so finding one means a camera packed a byte stream into one unit.
    """
    return START_CODE in nal


def strip_trailing_zeros(nal: bytes) -> bytes:
    """Remove trailing_zero_8bits; a NAL unit never ends in a zero byte."""
    return nal.rstrip(b"\x00")
