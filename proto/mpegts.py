"""MPEG-2 transport stream muxing (ISO 13818-1) for HLS segments: H.264 video, AAC audio.

One program with a PAT and a PMT. Video is stream type 0x1B (Annex B H.264
with an access unit delimiter per frame), audio is stream type 0x0F (AAC in
ADTS). Every PES packet carries PTS (and DTS for video when it differs),
every video PES packet carries a PCR, and a keyframe's first packet sets the
random access indicator. Timestamps are 90 kHz ticks and wrap at 2**33.
"""

from __future__ import annotations

import struct

PACKET_SIZE = 188
SYNC_BYTE = 0x47
PID_PAT = 0x0000
PID_PMT = 0x1000
PID_VIDEO = 0x0100
PID_AUDIO = 0x0101

STREAM_TYPE_H264 = 0x1B
STREAM_TYPE_AAC_ADTS = 0x0F
STREAM_ID_VIDEO = 0xE0
STREAM_ID_AUDIO = 0xC0

TIMESTAMP_MASK = (1 << 33) - 1
# The PCR runs this far behind the video decode time, the T-STD buffering
# delay that FFmpeg's MPEG-TS muxer also uses by default (0.7 s).
PCR_DELAY_TICKS = 63000

ACCESS_UNIT_DELIMITER = b"\x00\x00\x00\x01\x09\xf0"


def _crc32_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


_CRC_TABLE = _crc32_table()


def crc32_mpeg2(data: bytes) -> int:
    """Return the CRC-32/MPEG-2 of ``data`` (polynomial 0x04C11DB7, no reflection, no final XOR)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[((crc >> 24) ^ byte) & 0xFF]
    return crc


def _section(table_id: int, table_id_extension: int, body: bytes) -> bytes:
    """Wrap ``body`` in a long-form PSI section with version 0 and its CRC."""
    length = 5 + len(body) + 4
    header = struct.pack(">BHHBBB", table_id, 0xB000 | length, table_id_extension, 0xC1, 0, 0)
    section = header + body
    return section + struct.pack(">I", crc32_mpeg2(section))


def _timestamp(prefix: int, ticks: int) -> bytes:
    """Encode a 33-bit PTS or DTS in the 5-byte PES form with its 4-bit prefix."""
    ticks &= TIMESTAMP_MASK
    return bytes(
        (
            (prefix << 4) | ((ticks >> 29) & 0x0E) | 1,
            (ticks >> 22) & 0xFF,
            ((ticks >> 14) & 0xFE) | 1,
            (ticks >> 7) & 0xFF,
            ((ticks << 1) & 0xFE) | 1,
        )
    )


def _pcr(ticks: int) -> bytes:
    """Encode a PCR base in 90 kHz ticks, with extension 0, as the 6 bytes of the adaptation field."""
    base = ticks & TIMESTAMP_MASK
    return struct.pack(">IH", base >> 1, ((base & 1) << 15) | 0x7E00)


def length_prefixed_to_annexb(sample: bytes) -> list[bytes]:
    """Split an ISO 14496-15 sample (4-byte lengths) into its NAL units."""
    nals = []
    position = 0
    end = len(sample)
    while position + 4 <= end:
        (size,) = struct.unpack_from(">I", sample, position)
        position += 4
        nals.append(sample[position : position + size])
        position += size
    return nals


class TsMuxer:
    """Transport stream packets for one program; keeps continuity counters across segments."""

    def __init__(self, has_audio: bool) -> None:
        self.has_audio = has_audio
        self._continuity: dict[int, int] = {}

    # --- tables -------------------------------------------------------------------

    def tables(self) -> bytes:
        """Return a PAT and a PMT, as every HLS segment starts with them."""
        pat = _section(0x00, 1, struct.pack(">HH", 1, 0xE000 | PID_PMT))
        streams = struct.pack(">BHH", STREAM_TYPE_H264, 0xE000 | PID_VIDEO, 0xF000)
        if self.has_audio:
            streams += struct.pack(">BHH", STREAM_TYPE_AAC_ADTS, 0xE000 | PID_AUDIO, 0xF000)
        # PCR on the video PID, no program descriptors.
        pmt = _section(0x02, 1, struct.pack(">HH", 0xE000 | PID_VIDEO, 0xF000) + streams)
        return self._packetize(PID_PAT, b"\x00" + pat) + self._packetize(PID_PMT, b"\x00" + pmt)

    # --- PES ----------------------------------------------------------------------

    def video(self, annexb: bytes, pts: int, dts: int, key: bool) -> bytes:
        """Return the packets of one video access unit, already in Annex B form."""
        if pts != dts:
            header = b"\xc0\x0a" + _timestamp(0x3, pts) + _timestamp(0x1, dts)
        else:
            header = b"\x80\x05" + _timestamp(0x2, pts)
        # A video PES may leave its length 0 (unbounded); larger frames must.
        pes = b"\x00\x00\x01" + bytes((STREAM_ID_VIDEO,)) + b"\x00\x00" + b"\x80" + header + annexb
        # NOTE: the PCR rides only on video, so below 10 fps it comes less often
        # than the 100 ms ISO 13818-1 recommends; HLS players tested here do not mind.
        pcr = max(0, dts - PCR_DELAY_TICKS)
        return self._packetize(PID_VIDEO, pes, pcr=pcr, random_access=key)

    def audio(self, adts_frame: bytes, pts: int) -> bytes:
        """Return the packets of one ADTS frame."""
        header = b"\x80\x80\x05" + _timestamp(0x2, pts)
        length = len(header) + len(adts_frame)
        pes = b"\x00\x00\x01" + bytes((STREAM_ID_AUDIO,)) + struct.pack(">H", length) + header + adts_frame
        return self._packetize(PID_AUDIO, pes)

    # --- packets ------------------------------------------------------------------

    def _next_counter(self, pid: int) -> int:
        counter = self._continuity.get(pid, -1)
        counter = (counter + 1) & 0x0F
        self._continuity[pid] = counter
        return counter

    def _packetize(self, pid: int, payload: bytes, pcr: int | None = None, random_access: bool = False) -> bytes:
        """Split one PES packet or PSI section into transport packets, stuffing the last one."""
        out = bytearray()
        position = 0
        total = len(payload)
        first = True
        while first or position < total:
            adaptation = b""
            if first and (pcr is not None or random_access):
                flags = 0
                field = b""
                if random_access:
                    flags |= 0x40
                if pcr is not None:
                    flags |= 0x10
                    field = _pcr(pcr)
                field = bytes((flags,)) + field
                adaptation = bytes((len(field),)) + field
            room = PACKET_SIZE - 4 - len(adaptation)
            remaining = total - position
            if remaining < room:
                # Stuff with 0xFF inside the adaptation field so the payload ends the packet.
                stuffing = room - remaining
                if adaptation:
                    adaptation = bytes((adaptation[0] + stuffing,)) + adaptation[1:] + b"\xff" * stuffing
                elif stuffing == 1:
                    adaptation = b"\x00"
                else:
                    adaptation = bytes((stuffing - 1, 0x00)) + b"\xff" * (stuffing - 2)
                room = remaining
            control = 0x30 if adaptation else 0x10
            start = 0x40 if first else 0
            out += struct.pack(
                ">BHB", SYNC_BYTE, (start << 8) | pid, control | self._next_counter(pid)
            )
            out += adaptation
            out += payload[position : position + room]
            position += room
            first = False
        return bytes(out)
