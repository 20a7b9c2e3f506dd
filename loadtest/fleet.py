"""A fleet of simulated cameras for load tests: bit-rate spread, flapping and clock jumps.

Cameras are addressed as ``/cam{N}``. Which cameras flap or jump is a
deterministic function of N (:func:`is_flapping`, :func:`is_jumping`), so
the viewer swarm knows which stalls to expect without asking the simulator.

Run as ``python -m loadtest.fleet``; it prints one JSON line of counters
per second on stdout (``connections_open``, ``connections_total``,
``sessions_playing``, ``bytes_sent``) for the load test to read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections import Counter
from dataclasses import replace

from loadtest.clip import Clip, ClipFrame, load_clip, packetize_nal
from loadtest.simulator import MEDIA_DIR, Faults, Mount, SimulatorServer, build_templates

CLIPS = {"h264": MEDIA_DIR / "street-4mp-h264.mp4", "h265": MEDIA_DIR / "street-4mp-h265.mp4"}
SPREAD_BUCKETS = 4
_CAMERA_PATH = re.compile(r"^/cam(\d+)$")


def _picked(index: int, share: float, salt: int) -> bool:
    """Pick about ``share`` of all camera numbers, spread evenly and reproducibly."""
    if share <= 0:
        return False
    return ((index * 7919 + salt) % 1000) < share * 1000


def is_flapping(index: int, share: float) -> bool:
    return _picked(index, share, 0)


def is_jumping(index: int, share: float) -> bool:
    return _picked(index, share, 500)


def camera_index(path: str) -> int | None:
    match = _CAMERA_PATH.match(path)
    return int(match.group(1)) if match else None


def pad_clip(clip: Clip, factor: float) -> Clip:
    """Return the clip with filler NAL units that raise its bit rate by ``factor``.

    Filler data (H.264 type 12, H.265 type 38) is valid in any stream and
    carries nothing, so the picture stays the same while the bytes grow.
    """
    if factor <= 0:
        return clip
    frames = []
    for frame in clip.frames:
        size = int(sum(len(payload) for payload in frame.payloads) * factor)
        if clip.codec == "h264":
            filler = bytes((0x0C,)) + b"\xff" * max(1, size - 2) + b"\x80"
        else:
            filler = bytes((38 << 1, 0x01)) + b"\xff" * max(1, size - 3) + b"\x80"
        payloads = frame.payloads[:-1] + packetize_nal(clip.codec, filler) + frame.payloads[-1:]
        frames.append(ClipFrame(frame.pts, frame.key, payloads, frame.audio))
    return replace(clip, frames=frames)


class FleetServer(SimulatorServer):
    """The simulator with per-camera bit rates, flapping and timestamp jumps."""

    def __init__(
        self,
        clip: Clip,
        *,
        bitrate_spread: float = 0.0,
        flap_share: float = 0.0,
        flap_up_seconds: float = 20.0,
        flap_down_seconds: float = 5.0,
        jump_share: float = 0.0,
        jump_seconds: float = 3600.0,
    ) -> None:
        super().__init__(any_path=clip, faults=self._faults_for)
        self._buckets: list[Mount] = []
        if bitrate_spread > 0:
            for bucket in range(SPREAD_BUCKETS):
                factor = bitrate_spread * bucket / (SPREAD_BUCKETS - 1)
                padded = pad_clip(clip, factor)
                self._buckets.append(Mount(padded, build_templates(padded)))
        self.flap_share = flap_share
        self.flap_up_seconds = flap_up_seconds
        self.flap_down_seconds = flap_down_seconds
        self.jump_share = jump_share
        self.jump_seconds = jump_seconds
        self._down_until: dict[int, float] = {}

    def mount_for(self, path: str) -> Mount | None:
        index = camera_index(path)
        if index is None:
            return None
        if self._down_until.get(index, 0.0) > time.monotonic():
            return None  # a flapping camera that is down answers 404 to DESCRIBE
        if self._buckets:
            return self._buckets[index % len(self._buckets)]
        return super().mount_for(path)

    def _faults_for(self, path: str) -> Faults:
        index = camera_index(path)
        faults = Faults()
        if index is None:
            return faults
        if is_flapping(index, self.flap_share):
            faults.drop_after_seconds = self.flap_up_seconds
            down_at = time.monotonic() + self.flap_up_seconds
            self._down_until[index] = down_at + self.flap_down_seconds
        if is_jumping(index, self.jump_share):
            faults.timestamp_jump_seconds = self.jump_seconds
            faults.jump_after_seconds = 10.0
        return faults


async def _run(args: argparse.Namespace) -> None:
    clip = load_clip(CLIPS.get(args.clip, args.clip))
    server = FleetServer(
        clip,
        bitrate_spread=args.bitrate_spread,
        flap_share=args.flap_share,
        flap_up_seconds=args.flap_up_seconds,
        flap_down_seconds=args.flap_down_seconds,
        jump_share=args.jump_share,
    )
    await server.start(args.host, args.port)
    print(json.dumps({"event": "ready", "port": server.port, "bitrate_bps": clip.bitrate_bps}), flush=True)
    while True:
        await asyncio.sleep(1.0)
        per_path = Counter(session.path for session in server.sessions())
        stats = {
            "event": "stats",
            "paths_playing": len(per_path),
            "max_sessions_per_path": max(per_path.values(), default=0),
            "connections_open": server.connections_open,
            "connections_total": server.connections_total,
            "sessions_playing": server.sessions_playing,
            "bytes_sent": server.total_bytes,
        }
        print(json.dumps(stats), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.fleet", description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default="h264", help="h264, h265 or a path to an MP4 clip")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="RTSP port; 0 picks a free one")
    parser.add_argument("--bitrate-spread", type=float, default=0.0, help="extra bit rate of the busiest cameras, as a share (0.5 = +50 %%)")
    parser.add_argument("--flap-share", type=float, default=0.0, help="share of cameras that drop and come back")
    parser.add_argument("--flap-up-seconds", type=float, default=20.0, help="how long a flapping camera streams before it drops")
    parser.add_argument("--flap-down-seconds", type=float, default=5.0, help="how long a flapping camera stays unreachable")
    parser.add_argument("--jump-share", type=float, default=0.0, help="share of cameras whose RTP clock jumps an hour ahead once")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(_run(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
