"""Selection of the RTP packets on a track's channel that belong to the stream Pantau set up.

A channel can carry more than the stream: packets of an earlier session
that an old LIVE555 server still pushes into the new connection (another
SSRC), and packets of another payload type (metadata) from the same
source. Pantau picks one SSRC and one payload type per track, in this
order of evidence:

1. the SSRC that SETUP's Transport or PLAY's RTP-Info states;
2. the source whose first packet carries the sequence number RTP-Info
   announced (unless RTP-Info gives the placeholder seq 0 and rtptime 0);
3. the first source that did not already send before the PLAY reply;
4. after ``SOURCE_SWITCH_SECONDS`` without an acceptable packet, whatever
   keeps arriving, as long as its payload looks like the track's codec.

Rule 4 also covers a camera whose stated SSRC or payload type is wrong, and
a camera that really restarts its stream with a new SSRC.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# After this long without packets from the chosen source, another source
# that keeps arriving is taken instead.
SOURCE_SWITCH_SECONDS = 1.0
# How long a source that does not match RTP-Info's sequence number waits
# for one that does, when RTP-Info announced one.
SEQUENCE_MATCH_WAIT_SECONDS = 0.3
# A first packet this many sequence numbers after RTP-Info's seq still matches it.
SEQUENCE_MATCH_WINDOW = 64

# Checks whether the payload of ``buf[start:end]`` can be this track's codec.
PayloadCheck = Callable[[bytes | bytearray, int, int], bool]


def _any_payload(buf: bytes | bytearray, start: int, end: int) -> bool:
    return True


class SourceFilter:
    """Accept the packets of one SSRC and payload type; see the module docstring for the choice."""

    __slots__ = (
        "_last_good",
        "_payload_check",
        "_started",
        "dropped",
        "expected_seq",
        "foreign",
        "payload_type",
        "ssrc",
        "stale",
        "switches",
    )

    def __init__(self, payload_type: int, payload_check: PayloadCheck | None = None) -> None:
        self.ssrc: int | None = None
        self.payload_type = payload_type
        self.expected_seq: int | None = None
        self.stale: frozenset[int] = frozenset()  # SSRCs seen on the channel before the PLAY reply
        self._payload_check = payload_check or _any_payload
        now = time.monotonic()
        self._started = now
        self._last_good = now
        self.dropped = 0  # packets of other sources
        self.foreign = 0  # packets of the chosen source with another payload type
        self.switches = 0

    def expect(self, ssrc: int | None, seq: int | None, stale: set[int] | frozenset[int]) -> None:
        """Record what the camera announced for this track, before its first packet arrives."""
        if ssrc:
            self.ssrc = ssrc
        self.expected_seq = seq
        self.stale = frozenset(stale) - ({ssrc} if ssrc else set())
        self._started = self._last_good = time.monotonic()

    def accept(
        self, ssrc: int, payload_type: int, seq: int, buf: bytes | bytearray, start: int, end: int
    ) -> bool:
        """Return True when the packet belongs to the track's stream; runs once per packet."""
        now = time.monotonic()
        if ssrc == self.ssrc:
            if payload_type == self.payload_type:
                self._last_good = now
                return True
            if now - self._last_good > SOURCE_SWITCH_SECONDS and self._payload_check(buf, start, end):
                # The camera sends this stream on another payload type than it declared.
                return self._switch(ssrc, payload_type, now)
            self.foreign += 1
            return False
        if self.ssrc is None and payload_type == self.payload_type and self._first_source(ssrc, seq, now):
            self.ssrc = ssrc
            self._last_good = now
            return True
        silent = now - self._last_good
        # A source that already sent before PLAY gets twice the wait: it is likely the stale one.
        waited = silent > (2 * SOURCE_SWITCH_SECONDS if ssrc in self.stale else SOURCE_SWITCH_SECONDS)
        if waited and self._payload_check(buf, start, end):
            return self._switch(ssrc, payload_type, now)
        self.dropped += 1
        return False

    def _switch(self, ssrc: int, payload_type: int, now: float) -> bool:
        self.ssrc = ssrc
        self.payload_type = payload_type
        self._last_good = now
        self.switches += 1
        return True

    def _first_source(self, ssrc: int, seq: int, now: float) -> bool:
        expected = self.expected_seq
        if expected is not None and (seq - expected) & 0xFFFF < SEQUENCE_MATCH_WINDOW:
            return True
        if ssrc in self.stale:
            return False
        return expected is None or now - self._started > SEQUENCE_MATCH_WAIT_SECONDS
