"""A video track's parameter sets (VPS, SPS, PPS): from the SDP first, from the stream later.

Pantau never requires the SDP's ``sprop-parameter-sets`` (H.264) or
``sprop-vps``/``sprop-sps``/``sprop-pps`` (H.265). Cameras leave them out,
leave entries empty, write ``(null)``, shift them by some bytes, wrap them
in Annex B start codes or pad them with zero bytes. Every entry that does
not decode to a parameter set of the track's codec is ignored, and the
in-band sets before the first keyframe are used instead. In-band sets
always win over the SDP's: the picture size, profile and decoder
configuration come from the sets the camera actually streams.

``profile-level-id``, ``x-dimensions`` and ``framesize`` are never read:
cameras fill them with another profile (Baseline for a Main stream),
zeros, base64 or the size before cropping.
"""

from __future__ import annotations

import base64
import binascii

from proto import h264, h265
from proto.annexb import split_annexb
from proto.bits import BitReader, BitstreamError, unescape_rbsp
from relay.media import VideoInfo, h264_video_info, h265_video_info

_NULL_ENTRIES = ("(null)", "null", "none")
SPROP_KEYS = {"h264": ("sprop-parameter-sets",), "h265": ("sprop-vps", "sprop-sps", "sprop-pps")}


def decode_parameter_set(text: str) -> list[bytes]:
    """Decode one base64 sprop entry into NAL units.

    Cameras send entries that are empty, ``(null)``, unpadded, in the
    URL-safe base64 alphabet, wrapped in start codes or followed by zero
    bytes. Each of those decodes or yields nothing, and none raises.
    """
    text = text.strip().strip('"').strip()
    if not text or text.lower() in _NULL_ENTRIES:
        return []
    text += "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            raw = base64.urlsafe_b64decode(text)
        else:
            raw = base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        return []
    return [nal.rstrip(b"\x00") for nal in split_annexb(raw) if nal.rstrip(b"\x00")]


def _pps_id(nal: bytes, header_length: int) -> int | None:
    try:
        return BitReader(unescape_rbsp(nal), header_length).ue_max(255, "pps_id")
    except BitstreamError:
        return None


class ParameterSets:
    """The parameter sets of one video track and the description built from them.

    When in-band sets differ from what is known, the description is rebuilt,
    so outputs regenerate their sequence headers and init segments. The
    first in-band PPS also drops the PPSs that came from the SDP, because a
    camera that sends PPSs in-band sends all it uses.
    """

    def __init__(self, codec: str) -> None:
        self.codec = codec
        self.vps: bytes | None = None
        self.sps: bytes | None = None
        self.pps: dict[int, bytes] = {}
        self.info: VideoInfo | None = None
        self.error: str | None = None
        self.sdp_status = "absent"  # what the SDP's sprop parameters gave: absent, ok, incomplete or ignored
        self._sdp_pps_ids: set[int] = set()

    def load_sdp(self, fmtp: dict[str, str]) -> None:
        """Take the parameter sets from a video fmtp and record what came of them."""
        entries = [entry for key in SPROP_KEYS[self.codec] for entry in fmtp.get(key, "").split(",")]
        present = [entry for entry in entries if entry.strip()]
        if not present:
            return
        accepted = 0
        problems = []
        for entry in present:
            nals = decode_parameter_set(entry)
            if not nals:
                problems.append(f"{entry.strip()[:16]!r} does not decode")
            for nal in nals:
                if self.add(nal, from_sdp=True):
                    accepted += 1
                elif not self._is_parameter_set(nal):
                    problems.append(f"NAL header {nal[0]:02x} is not a {self.codec.upper()} parameter set")
        if accepted == 0:
            reason = self.error or "; ".join(problems) or "no parameter set"
            self.sdp_status = f"ignored: {reason}"
        elif self.rebuild() is None:
            self.sdp_status = "incomplete"
        else:
            self.sdp_status = "ok"

    def _is_parameter_set(self, nal: bytes) -> bool:
        if nal[0] & 0x80:
            return False  # forbidden_zero_bit set: not a NAL unit at all
        if self.codec == "h264":
            return (nal[0] & 0x1F) in (h264.NAL_SPS, h264.NAL_PPS)
        return ((nal[0] >> 1) & 0x3F) in (h265.NAL_VPS, h265.NAL_SPS, h265.NAL_PPS)

    def add(self, nal: bytes, *, from_sdp: bool = False) -> bool:
        """Store a VPS, SPS or PPS; return True when it changed anything."""
        nal = nal.rstrip(b"\x00")
        if len(nal) < 2 or not self._is_parameter_set(nal):
            return False
        if self.codec == "h264":
            kind = nal[0] & 0x1F
            if kind == h264.NAL_SPS:
                return self._set_sps(nal)
            return self._set_pps(nal, _pps_id(nal, 1), from_sdp)
        kind = (nal[0] >> 1) & 0x3F
        if kind == h265.NAL_VPS:
            changed = nal != self.vps
            self.vps = nal
            return changed
        if kind == h265.NAL_SPS:
            return self._set_sps(nal)
        return self._set_pps(nal, _pps_id(nal, 2), from_sdp)

    def _set_sps(self, nal: bytes) -> bool:
        if nal == self.sps:
            return False
        try:
            (h264.parse_sps if self.codec == "h264" else h265.parse_sps)(nal)
        except (BitstreamError, IndexError) as exc:
            # An SPS that does not parse (shifted sprop, garbage) is ignored
            # and the in-band one is awaited instead.
            self.error = f"invalid SPS: {exc}"
            return False
        self.sps = nal
        return True

    def _set_pps(self, nal: bytes, pps_id: int | None, from_sdp: bool) -> bool:
        if pps_id is None:
            return False
        changed = False
        if from_sdp:
            self._sdp_pps_ids.add(pps_id)
        elif self._sdp_pps_ids:
            for stale in self._sdp_pps_ids - {pps_id}:
                changed = self.pps.pop(stale, None) is not None or changed
            self._sdp_pps_ids.clear()
        if self.pps.get(pps_id) == nal:
            return changed
        self.pps[pps_id] = nal
        return True

    def rebuild(self) -> VideoInfo | None:
        """Rebuild the description once every needed set is known."""
        if self.sps is None or not self.pps:
            return None
        pps_list = [self.pps[key] for key in sorted(self.pps)]
        try:
            if self.codec == "h264":
                self.info = h264_video_info(self.sps, pps_list)
            else:
                if self.vps is None:
                    return None
                self.info = h265_video_info(self.vps, self.sps, pps_list[0])
        except (BitstreamError, IndexError) as exc:
            self.error = f"invalid parameter sets: {exc}"
            return None
        return self.info
