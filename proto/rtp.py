"""RTP and RTCP packet headers (RFC 3550)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

RTP_HEADER = struct.Struct(">BBHII")
NTP_UNIX_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01


def payload_bounds(buf: bytes | bytearray, start: int, end: int) -> tuple[int, int]:
    """Return the payload (start, end) of the RTP packet in ``buf[start:end]``.

    Skips CSRCs and the header extension and removes padding. Returns
    (-1, -1) for a packet too short for the headers it announces.
    """
    first = buf[start]
    offset = start + 12 + 4 * (first & 0x0F)
    if first & 0x10:  # header extension
        if offset + 4 > end:
            return -1, -1
        offset += 4 + 4 * ((buf[offset + 2] << 8) | buf[offset + 3])
    if first & 0x20 and end > offset:  # padding
        end -= buf[end - 1]
    if offset > end:
        return -1, -1
    return offset, end


@dataclass(frozen=True, slots=True)
class SenderReport:
    ssrc: int
    ntp_seconds: float  # Unix time of the report, from its NTP timestamp
    rtp_timestamp: int


def parse_sender_reports(buf: bytes | bytearray, start: int, end: int) -> list[SenderReport]:
    """Return the sender reports in a compound RTCP packet.

    Parsing walks packet by packet and stops at the first malformed one, so
    a broken SDES after a valid SR (seen from Hanwha cameras) does not lose
    the SR.
    """
    reports = []
    pos = start
    while pos + 4 <= end:
        first = buf[pos]
        if first >> 6 != 2:
            break
        packet_type = buf[pos + 1]
        length = (((buf[pos + 2] << 8) | buf[pos + 3]) + 1) * 4
        if packet_type == 200 and pos + 28 <= end:
            ssrc, ntp_high, ntp_low, rtp_ts = struct.unpack_from(">IIII", buf, pos + 4)
            ntp = ntp_high - NTP_UNIX_OFFSET + ntp_low / 4294967296.0
            reports.append(SenderReport(ssrc, ntp, rtp_ts))
        if length <= 0 or pos + length > end:
            break
        pos += length
    return reports


def receiver_report(own_ssrc: int, source_ssrc: int | None) -> bytes:
    """Build a minimal RTCP receiver report, used as liveness over UDP."""
    if source_ssrc is None:
        return struct.pack(">BBHI", 0x80, 201, 1, own_ssrc)
    return struct.pack(">BBHI I IIIII", 0x81, 201, 7, own_ssrc, source_ssrc, 0, 0, 0, 0, 0)
