"""The peer for benchmarks: Frigate-style recording, one ffmpeg process per camera.

    python -m loadtest.peer --cameras 50 --duration 60

starts the camera fleet and, per camera, ``ffmpeg -rtsp_transport tcp -i URL
-c copy -f segment`` (Debian's ffmpeg), then reports the processes' CPU and
resident memory over a steady window, measured the same way as Pantau's in
``python -m loadtest``: user+system time over the window, and RSS (ffmpeg
processes have nothing to subtract, so memory per camera is total / N).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loadtest.__main__ import Fleet, process_cpu_seconds, process_rss_bytes


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.peer", description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, default=20)
    parser.add_argument("--duration", type=float, default=60, help="steady window in seconds")
    parser.add_argument("--warmup", type=float, default=15)
    parser.add_argument("--clip", default="h264")
    parser.add_argument("--segment-seconds", type=int, default=60)
    parser.add_argument("--json", default="peer-result.json")
    args = parser.parse_args()
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        print("loadtest.peer: ffmpeg is not installed", file=sys.stderr)
        return 2

    fleet_args = argparse.Namespace(
        clip=args.clip, bitrate_spread=0.0, flap_share=0.0, flap_up_seconds=20.0, flap_down_seconds=5.0, jump_share=0.0
    )
    fleet = Fleet(fleet_args)
    output = Path(tempfile.mkdtemp(prefix="pantau-peer-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for index in range(args.cameras):
            directory = output / f"cam{index}"
            directory.mkdir()
            processes.append(
                subprocess.Popen(
                    [
                        ffmpeg, "-nostdin", "-loglevel", "error", "-rtsp_transport", "tcp",
                        "-i", f"rtsp://127.0.0.1:{fleet.port}/cam{index}", "-c", "copy", "-f", "segment",
                        "-segment_time", str(args.segment_seconds), "-reset_timestamps", "1",
                        str(directory / "%05d.mp4"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        time.sleep(args.warmup)
        running = [process for process in processes if process.poll() is None]
        cpu_start = sum(process_cpu_seconds(process.pid) for process in running)
        started = time.monotonic()
        time.sleep(args.duration)
        window = time.monotonic() - started
        cpu_end = sum(process_cpu_seconds(process.pid) for process in running if process.poll() is None)
        rss = sum(process_rss_bytes(process.pid) for process in running if process.poll() is None)
        cpu_percent = (cpu_end - cpu_start) / window * 100
        report = {
            "command": " ".join(sys.argv),
            "peer": "ffmpeg -rtsp_transport tcp -i URL -c copy -f segment, one process per camera",
            "cameras": args.cameras,
            "running": len(running),
            "window_seconds": round(window, 1),
            "cpu_percent_of_core": round(cpu_percent, 3),
            "cpu_percent_per_camera": round(cpu_percent / args.cameras, 3),
            "rss_bytes": rss,
            "rss_per_camera_bytes": round(rss / args.cameras),
            "upstream_connections": fleet.stats.get("connections_open"),
        }
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
        fleet.stop()
        shutil.rmtree(output, ignore_errors=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if report["running"] == args.cameras else 1


if __name__ == "__main__":
    sys.exit(main())
