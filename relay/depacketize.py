"""RTP payloads to access units: H.264 (RFC 6184), H.265 (RFC 7798), AAC (RFC 3640).

Access-unit boundaries follow what cameras really send, not only the marker
bit: a camera may set the marker on SPS, PPS or SEI packets, on the last
packet of every slice instead of every picture, never set it, or stamp
parameter sets with another timestamp than the picture. So a unit ends
when a packet with a new timestamp arrives, when an access unit delimiter,
parameter set or prefix SEI follows a slice, when a slice starts a new
picture, or on a marker bit right after a slice. Only a slice ends a unit
on the marker bit, so a marked SPS or SEI stays with its picture. When a
slice that continues a picture (not its first slice, same timestamp)
arrives after the marker bit ended that picture, the marker is not trusted
for the rest of the session; the picture it cut is the one glitch. Only
units that contain a slice are delivered.

The methods here run once per RTP packet and keep to slicing and integer
tests; everything per frame happens in the callback.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from proto import h264, h265
from proto.aac import adts_header_length
from proto.annexb import START_CODE, split_annexb

# Roles of a NAL unit in access-unit assembly.
DROP = 0
KEEP = 1
SLICE = 2

# Called with (NAL units, RTP timestamp, keyframe) for each complete access unit.
AccessUnitCallback = Callable[[list[bytes], int, bool], None]


class DepacketizerStats:
    """Per-packet faults, counted here and logged as periodic summaries."""

    __slots__ = ("annexb_repairs", "dropped_fragments", "lost_packets", "marker_distrusted", "unsupported_packets")

    def __init__(self) -> None:
        self.lost_packets = 0
        self.dropped_fragments = 0
        self.unsupported_packets = 0
        self.annexb_repairs = 0
        self.marker_distrusted = 0

    def snapshot(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class VideoDepacketizer:
    """Common access-unit assembly; subclasses unpack their codec's payload formats."""

    codec = ""

    def __init__(self, on_access_unit: AccessUnitCallback) -> None:
        self._on_access_unit = on_access_unit
        self.stats = DepacketizerStats()
        self._expected_seq: int | None = None
        self._fragments: list[bytes | bytearray] | None = None
        self._au: list[bytes] = []
        self._au_ts = 0
        self._au_has_vcl = False
        self._au_key = False
        self._au_orphan = False  # the rest of a picture the marker bit cut off
        self.marker_trusted = True
        self._marker_flushed_ts: int | None = None  # timestamp of the last unit the marker ended

    def skip_sequence(self, seq: int) -> None:
        """Count a packet of this source that carries another payload type as received, not lost."""
        if self._expected_seq == seq:
            self._expected_seq = (seq + 1) & 0xFFFF

    def push(self, buf: bytes | bytearray, start: int, end: int, seq: int, ts: int, marker: bool) -> None:
        """Take the payload ``buf[start:end]`` of one RTP packet."""
        expected = self._expected_seq
        if expected is not None and seq != expected:
            self.stats.lost_packets += (seq - expected) & 0xFFFF
            if self._fragments is not None:
                # A fragmented NAL unit with a hole cannot be decoded.
                self._fragments = None
                self.stats.dropped_fragments += 1
        self._expected_seq = (seq + 1) & 0xFFFF

        if self._au_has_vcl and ts != self._au_ts:
            self._flush()
        if end <= start:
            return
        completed_vcl = self._unpack(buf, start, end, ts)
        if marker and completed_vcl and self._au_has_vcl and self.marker_trusted:
            self._flush()
            self._marker_flushed_ts = ts

    def _unpack(self, buf: bytes | bytearray, start: int, end: int, ts: int) -> bool:
        """Unpack one payload; return True when it completed a slice NAL unit."""
        raise NotImplementedError

    def _classify(self, nal: bytes) -> tuple[int, bool, bool]:
        """Return (role, keyframe slice, starts a new access unit).

        The role is DROP, KEEP (non-slice unit kept in the access unit) or SLICE.
        """
        raise NotImplementedError

    def _nal(self, nal: bytes, ts: int) -> bool:
        """Add one NAL unit to the current access unit; return True for a slice."""
        if START_CODE in nal:
            # Emulation prevention keeps start codes out of valid NAL units, so
            # this is a byte stream packed into one unit (V380-type cameras).
            self.stats.annexb_repairs += 1
            found_vcl = False
            for part in split_annexb(nal):
                found_vcl = self._nal_unit(part, ts) or found_vcl
            return found_vcl
        return self._nal_unit(nal, ts)

    def _nal_unit(self, nal: bytes, ts: int) -> bool:
        if not nal:
            return False
        role, key, boundary = self._classify(nal)
        if boundary and self._au_has_vcl:
            self._flush()
        if role == DROP:
            return False
        if role == SLICE:
            if not self._au_has_vcl:
                if not boundary and ts == self._marker_flushed_ts and self.marker_trusted:
                    # The marker bit ended the previous unit in the middle of this picture.
                    self.marker_trusted = False
                    self.stats.marker_distrusted += 1
                    self._au_orphan = True
                self._au_ts = ts
                self._au_has_vcl = True
            if key:
                self._au_key = True
        self._au.append(nal)
        return role == SLICE

    def _fragment(
        self, fu_header: int, nal_header: bytes, buf: bytes | bytearray, start: int, end: int, ts: int
    ) -> bool:
        """Collect one FU-A (H.264) or FU (H.265) fragment; a start and end bit may come together."""
        if fu_header & 0x80:  # start bit
            if self._fragments is not None:
                self.stats.dropped_fragments += 1
            # The reconstructed header of the first fragment is kept, so a
            # type that changes in later fragments does not matter.
            self._fragments = [nal_header, buf[start:end]]
        elif self._fragments is None:
            self.stats.dropped_fragments += 1
            return False
        else:
            self._fragments.append(buf[start:end])
        if fu_header & 0x40:  # end bit
            nal = b"".join(self._fragments)
            self._fragments = None
            return self._nal(nal, ts)
        return False

    def _aggregate(self, buf: bytes | bytearray, pos: int, end: int, ts: int) -> bool:
        """Split an aggregation packet (STAP-A, or AP for H.265): 16-bit size, then the unit."""
        found_vcl = False
        while pos + 2 <= end:
            size = (buf[pos] << 8) | buf[pos + 1]
            pos += 2
            if size == 0 or pos + size > end:
                break
            found_vcl = self._nal(bytes(buf[pos : pos + size]), ts) or found_vcl
            pos += size
        return found_vcl

    def _flush(self) -> None:
        nals = self._au
        ts = self._au_ts
        key = self._au_key
        orphan = self._au_orphan
        self._au = []
        self._au_has_vcl = False
        self._au_key = False
        self._au_orphan = False
        self._marker_flushed_ts = None
        if not orphan:
            self._on_access_unit(nals, ts, key)


class H264Depacketizer(VideoDepacketizer):
    codec = "h264"

    def _unpack(self, buf: bytes | bytearray, start: int, end: int, ts: int) -> bool:
        header = buf[start]
        kind = header & 0x1F
        if kind <= 23:
            # Type 0 is where a payload starting with a start code lands.
            return self._nal(bytes(buf[start:end]), ts)
        if kind == h264.NAL_FU_A:
            if end - start < 3:
                return False  # empty fragment
            fu_header = buf[start + 1]
            header = bytes(((header & 0xE0) | (fu_header & 0x1F),))
            return self._fragment(fu_header, header, buf, start + 2, end, ts)
        if kind == h264.NAL_STAP_A:
            return self._aggregate(buf, start + 1, end, ts)
        self.stats.unsupported_packets += 1
        return False

    def _classify(self, nal: bytes) -> tuple[int, bool, bool]:
        kind = nal[0] & 0x1F
        if 1 <= kind <= 5:
            return SLICE, kind == h264.NAL_IDR, h264.first_slice_of_picture(nal)
        if kind == h264.NAL_AUD:
            return DROP, False, True
        if kind == 0 or kind == h264.NAL_FILLER:
            return DROP, False, False
        # SPS, PPS and SEI come before the slices of their picture.
        return KEEP, False, kind in (h264.NAL_SPS, h264.NAL_PPS, h264.NAL_SEI)


class H265Depacketizer(VideoDepacketizer):
    codec = "h265"

    def _unpack(self, buf: bytes | bytearray, start: int, end: int, ts: int) -> bool:
        if end - start < 3:
            return False
        kind = (buf[start] >> 1) & 0x3F
        if kind < h265.NAL_AP:
            return self._nal(bytes(buf[start:end]), ts)
        if kind == h265.NAL_FU:
            if end - start < 4:
                return False
            fu_header = buf[start + 2]
            header = bytes(((buf[start] & 0x81) | ((fu_header & 0x3F) << 1), buf[start + 1]))
            return self._fragment(fu_header, header, buf, start + 3, end, ts)
        if kind == h265.NAL_AP:
            return self._aggregate(buf, start + 2, end, ts)
        self.stats.unsupported_packets += 1
        return False

    def _classify(self, nal: bytes) -> tuple[int, bool, bool]:
        kind = (nal[0] >> 1) & 0x3F
        if kind < 32:
            return SLICE, h265.is_keyframe(kind), h265.first_slice_of_picture(nal)
        if kind == h265.NAL_AUD:
            return DROP, False, True
        # VPS, SPS, PPS and prefix SEI open a picture; a suffix SEI closes one.
        boundary = kind in (h265.NAL_VPS, h265.NAL_SPS, h265.NAL_PPS, h265.NAL_SEI_PREFIX)
        return KEEP, False, boundary


# Called with (raw AAC frame, RTP timestamp of that frame).
AudioFrameCallback = Callable[[bytes, int], None]


class AacDepacketizer:
    """RFC 3640 ``mpeg4-generic`` AAC with AU headers (AAC-hbr and AAC-lbr modes).

    A frame larger than one packet arrives as fragments that end with the
    marker bit. Frames that carry an ADTS header (some cameras put raw ADTS
    inside RFC 3640) are stripped to raw AAC.
    """

    def __init__(
        self,
        on_frame: AudioFrameCallback,
        frame_ticks: int,
        size_length: int = 13,
        index_length: int = 3,
        index_delta_length: int = 3,
    ) -> None:
        self._on_frame = on_frame
        self._frame_ticks = frame_ticks  # RTP clock ticks per frame, for packets with several frames
        self._size_length = size_length
        self._index_length = index_length
        self._index_delta_length = index_delta_length
        self._fragment = bytearray()
        self._fragment_size = 0
        self.stats = DepacketizerStats()

    def push(self, buf: bytes | bytearray, start: int, end: int, seq: int, ts: int, marker: bool) -> None:
        if end - start < 2:
            return
        header_bits = (buf[start] << 8) | buf[start + 1]
        header_bytes = (header_bits + 7) // 8
        data = start + 2 + header_bytes
        if data > end or self._size_length == 0:
            self.stats.unsupported_packets += 1
            return
        sizes = self._au_sizes(bytes(buf[start + 2 : start + 2 + header_bytes]), header_bits)
        if len(sizes) == 1 and data + sizes[0] > end:
            # One frame split over several packets.
            if not self._fragment:
                self._fragment_size = sizes[0]
            self._fragment += buf[data:end]
            if marker or len(self._fragment) >= self._fragment_size:
                self._emit(bytes(self._fragment), ts)
                self._fragment.clear()
            return
        self._fragment.clear()
        for index, size in enumerate(sizes):
            if data + size > end:
                self.stats.dropped_fragments += 1
                break
            self._emit(bytes(buf[data : data + size]), ts + index * self._frame_ticks)
            data += size

    def _au_sizes(self, headers: bytes, header_bits: int) -> list[int]:
        per_header_first = self._size_length + self._index_length
        per_header = self._size_length + self._index_delta_length
        sizes = []
        value = int.from_bytes(headers, "big") if headers else 0
        total_bits = len(headers) * 8
        pos = 0
        first = True
        while True:
            width = per_header_first if first else per_header
            if pos + width > header_bits or width == 0:
                break
            shift = total_bits - pos - self._size_length
            sizes.append((value >> shift) & ((1 << self._size_length) - 1))
            pos += width
            first = False
        return sizes

    def _emit(self, frame: bytes, ts: int) -> None:
        skip = adts_header_length(frame)
        if skip:
            frame = frame[skip:]
        if frame:
            self._on_frame(frame, ts)


def to_sample(nals: list[bytes]) -> bytes:
    """Join NAL units into a length-prefixed (4-byte) sample."""
    pack = _LENGTH.pack
    parts: list[bytes] = []
    for nal in nals:
        parts.append(pack(len(nal)))
        parts.append(nal)
    return b"".join(parts)


_LENGTH = struct.Struct(">I")
