"""Load test: simulated cameras, Pantau, and a swarm of viewers, with pass/fail checks.

    python -m loadtest --cameras 200 --viewers-per-camera 2 --record --duration 120

starts the camera fleet (``loadtest.fleet``) and Pantau in their own
processes, registers the cameras through the admin API, connects the
viewers, measures over a steady window, prints a table, writes JSON and
exits 1 when a check fails. ``--target URL`` measures a Pantau that is
already running instead (CPU and memory are then read only when it runs on
this machine and ``--pid`` is given).

Credentials: ``--key`` (or ``PANTAU_LOADTEST_KEY``) is sent as
``Authorization: Bearer`` on every request, to the admin API and by every
viewer. With ``--target`` it must be the target's admin token, since the
cameras are registered through the admin API. Without ``--target`` the
Pantau started here gets it as ``PANTAU_ADMIN_TOKEN`` (a random token when
none is given), so access control stays on during the measurement.

CPU is Pantau's user+system time over the window divided by the window, in
percent of one core. Memory per camera is (RSS with N cameras - RSS with
none) / N.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp

from loadtest.fleet import is_flapping, is_jumping
from loadtest.swarm import ViewerResult, summarize, watch_flv, watch_hls

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Fleet:
    """The camera simulator process and its latest counters."""

    def __init__(self, args: argparse.Namespace) -> None:
        command = [
            sys.executable, "-m", "loadtest.fleet", "--clip", args.clip,
            "--bitrate-spread", str(args.bitrate_spread), "--flap-share", str(args.flap_share),
            "--flap-up-seconds", str(args.flap_up_seconds), "--flap-down-seconds", str(args.flap_down_seconds),
            "--jump-share", str(args.jump_share),
        ]
        self.process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
        self.port = 0
        self.bitrate_bps = 0.0
        self.stats: dict[str, Any] = {}
        self.max_sessions_per_path = 0
        ready = threading.Event()

        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                event = json.loads(line)
                if event["event"] == "ready":
                    self.port = event["port"]
                    self.bitrate_bps = event["bitrate_bps"]
                    ready.set()
                else:
                    self.stats = event
                    self.max_sessions_per_path = max(self.max_sessions_per_path, event["max_sessions_per_path"])

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(60):
            raise SystemExit("loadtest: the camera fleet did not start within 60 s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()


# Settings the load test gives the Pantau it starts; --pantau-env may not change them.
LOADTEST_OWNED_SETTINGS = ("PANTAU_HTTP_HOST", "PANTAU_HTTP_PORT", "PANTAU_DATA_DIR", "PANTAU_ADMIN_TOKEN")


class PantauProcess:
    def __init__(self, args: argparse.Namespace, data_dir: Path) -> None:
        self.port = _free_port()
        env = dict(os.environ)
        env.update(
            {
                "PANTAU_HTTP_HOST": "127.0.0.1",
                "PANTAU_HTTP_PORT": str(self.port),
                "PANTAU_DATA_DIR": str(data_dir),
                "PANTAU_LOG_LEVEL": "warning",
                "PANTAU_ADMIN_TOKEN": args.key,
            }
        )
        for item in args.pantau_env:
            key, _, value = item.partition("=")
            env[key] = value
        self.log = open(data_dir / "pantau.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "relay", "serve"], cwd=REPO, env=env, stdout=self.log, stderr=self.log
        )
        self.base = f"http://127.0.0.1:{self.port}"

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode


async def wait_healthy(
    session: aiohttp.ClientSession, base: str, pantau: PantauProcess | None = None, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pantau is not None and pantau.process.poll() is not None:
            # Pantau stopped at start-up, usually on an invalid --pantau-env value: show why.
            log_path = Path(pantau.log.name)
            pantau.log.flush()
            tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise SystemExit(
                f"loadtest: Pantau exited with status {pantau.process.returncode} at start-up; "
                f"the end of {log_path}:\n" + "\n".join(tail)
            )
        try:
            async with session.get(f"{base}/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit(f"loadtest: Pantau at {base} did not answer /healthz within {timeout:g} s")


async def register_cameras(
    session: aiohttp.ClientSession, base: str, args: argparse.Namespace, fleet_port: int, headers: dict[str, str]
) -> None:
    semaphore = asyncio.Semaphore(32)

    async def put(index: int) -> None:
        entry: dict[str, Any] = {
            "id": f"cam{index}",
            "name": f"Load test camera {index}",
            "url": f"rtsp://127.0.0.1:{fleet_port}/cam{index}",
            "owner": {"category": "pemkab", "name": "Load test"},
            "mode": "always" if args.record or args.always else "on_demand",
        }
        if args.record:
            entry["record"] = True
        async with semaphore, session.put(f"{base}/api/cameras/cam{index}", json=entry, headers=headers) as response:
            if response.status not in (200, 201):
                raise SystemExit(f"loadtest: PUT cam{index} failed: {response.status} {await response.text()}")

    await asyncio.gather(*(put(index) for index in range(args.cameras)))


async def camera_views(
    session: aiohttp.ClientSession, base: str, headers: dict[str, str], cameras: int
) -> dict[str, dict[str, Any]]:
    """Return the views of the load test's cameras, leaving out a --target's own."""
    ours = {f"cam{index}" for index in range(cameras)}
    async with session.get(f"{base}/api/cameras", headers=headers) as response:
        body = await response.json()
    return {item["id"]: item for item in body["items"] if item["id"] in ours}


async def remove_cameras(session: aiohttp.ClientSession, base: str, headers: dict[str, str], cameras: int) -> None:
    """Delete the cameras the load test registered on a --target, whose simulator is about to stop."""
    for index in range(cameras):
        try:
            async with session.delete(f"{base}/api/cameras/cam{index}", headers=headers) as response:
                if response.status not in (204, 404):
                    print(f"loadtest: DELETE cam{index} failed: HTTP {response.status}", file=sys.stderr)
        except aiohttp.ClientError as exc:
            print(f"loadtest: DELETE cam{index} failed: {exc}", file=sys.stderr)
            return


async def open_extra_upstream(port: int, path: str) -> asyncio.StreamWriter:
    """Open a second RTSP session to one camera, as a bug in Pantau would, to show the check fails."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    url = f"rtsp://127.0.0.1:{port}{path}"
    for cseq, request in enumerate(
        [
            f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n",
            f"SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 2\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n",
            f"PLAY {url} RTSP/1.0\r\nCSeq: 3\r\nSession: x\r\n\r\n",
        ],
        start=1,
    ):
        writer.write(request.encode())
        await writer.drain()
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        del cseq
    return writer


def _git_commit() -> str | None:
    """Return the checkout's commit (with "+changes" when files differ from it), or None outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+changes" if dirty else "")


def _percent(value: float) -> float:
    return round(value, 3)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if not args.target and not args.key:
        args.key = secrets.token_urlsafe(32)  # the admin token of the Pantau started below
    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    fleet = Fleet(args)
    pantau: PantauProcess | None = None
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="pantau-loadtest-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    pid = args.pid
    base = args.target.rstrip("/") if args.target else ""
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    results: list[ViewerResult] = []
    report: dict[str, Any] = {}
    extra: asyncio.StreamWriter | None = None
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            if not base:
                pantau = PantauProcess(args, data_dir)
                base = pantau.base
                pid = pantau.process.pid
            await wait_healthy(session, base, pantau)
            await asyncio.sleep(2)
            baseline_rss = process_rss_bytes(pid) if pid else 0

            await register_cameras(session, base, args, fleet.port, headers)
            if args.record or args.always:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    views = await camera_views(session, base, headers, args.cameras)
                    if sum(view["state"] == "live" for view in views.values()) >= args.cameras:
                        break
                    await asyncio.sleep(1)

            total_seconds = args.warmup + args.duration
            until = time.monotonic() + total_seconds + 5
            kinds = ["flv", "hls"] if args.protocol == "both" else [args.protocol]
            cold = not (args.record or args.always)
            tasks: list[asyncio.Task[ViewerResult]] = []
            viewers: list[ViewerResult] = []

            def start_viewer(index: int, kind: str, cold_start: bool) -> None:
                result = ViewerResult(
                    camera_id=f"cam{index}",
                    kind=kind,
                    cold=cold_start,
                    flapping=is_flapping(index, args.flap_share) or is_jumping(index, args.jump_share),
                )
                watch = watch_flv if kind == "flv" else watch_hls
                viewers.append(result)
                tasks.append(asyncio.create_task(watch(session, base, result, until, headers)))

            if args.viewers_per_camera > 0:
                for index in range(args.cameras):
                    start_viewer(index, kinds[0], cold)
                await asyncio.sleep(3)
            for index in range(args.cameras):
                for viewer in range(1, args.viewers_per_camera * len(kinds)):
                    start_viewer(index, kinds[viewer % len(kinds)], False)

            if args.inject_extra_upstream:
                extra = await open_extra_upstream(fleet.port, f"/cam{args.cameras - 1}")

            await asyncio.sleep(args.warmup)
            rss_timeline: list[tuple[float, int]] = []
            sampler = asyncio.create_task(_sample_rss(pid, rss_timeline)) if pid else None
            profiler = _start_profiler(pid, args.duration, data_dir) if args.profile and pid else None
            cpu_start = process_cpu_seconds(pid) if pid else 0.0
            # The simulator and this process (the viewer swarm) must not be what limits the run.
            tools_cpu_start = (process_cpu_seconds(fleet.process.pid), process_cpu_seconds(os.getpid()))
            fleet_bytes_start = fleet.stats.get("bytes_sent", 0)
            window_start = time.monotonic()
            swarm_bytes_start = sum(viewer.bytes for viewer in viewers)
            await asyncio.sleep(args.duration)
            window = time.monotonic() - window_start
            if sampler is not None:
                sampler.cancel()
            profile = await asyncio.to_thread(_finish_profiler, profiler, data_dir) if profiler else None
            cpu_end = process_cpu_seconds(pid) if pid else 0.0
            tools_cpu_end = (process_cpu_seconds(fleet.process.pid), process_cpu_seconds(os.getpid()))
            rss = process_rss_bytes(pid) if pid else 0
            fleet_bytes_end = fleet.stats.get("bytes_sent", 0)
            swarm_bytes_end = sum(viewer.bytes for viewer in viewers)
            views = await camera_views(session, base, headers, args.cameras)
            fleet_stats = dict(fleet.stats)

            # Warm probes: one short extra viewer per camera (at most 100) on live cameras.
            probes: list[asyncio.Task[ViewerResult]] = []
            probe_until = time.monotonic() + 8
            for index in range(min(args.cameras, 100)):
                probe = ViewerResult(camera_id=f"cam{index}", kind=kinds[0], cold=False, flapping=is_flapping(index, args.flap_share))
                watch = watch_flv if kinds[0] == "flv" else watch_hls
                probes.append(asyncio.create_task(watch(session, base, probe, probe_until, headers)))
            probe_results = await asyncio.gather(*probes)
            results = await asyncio.gather(*tasks)

            recording = await _recording_stats(session, base, headers, args) if args.record else None
            if args.target:
                await remove_cameras(session, base, headers, args.cameras)

        cpu_percent = (cpu_end - cpu_start) / window * 100 if pid else None
        report = {"profile": profile} if args.profile else {}
        report["simulator_cpu_percent_of_core"] = _percent((tools_cpu_end[0] - tools_cpu_start[0]) / window * 100)
        report["swarm_cpu_percent_of_core"] = _percent((tools_cpu_end[1] - tools_cpu_start[1]) / window * 100)
        report |= _report(
            args, results, probe_results, views, fleet, fleet_stats, window, cpu_percent, rss, baseline_rss, rss_timeline,
            (fleet_bytes_end - fleet_bytes_start) * 8 / window / 1e6,
            (swarm_bytes_end - swarm_bytes_start) * 8 / window / 1e6,
            recording,
        )
    finally:
        if extra is not None:
            extra.close()
        if pantau is not None:
            report["pantau_exit_code"] = pantau.stop()
        fleet.stop()
        if args.data_dir is None:
            if report.get("ok") and not args.profile:
                shutil.rmtree(data_dir, ignore_errors=True)  # recordings can take gigabytes
            else:
                print(f"loadtest: Pantau's data directory and log are kept in {data_dir}", file=sys.stderr)
    return report


def _start_profiler(pid: int, seconds: float, data_dir: Path) -> subprocess.Popen[bytes] | None:
    """Sample Pantau with py-spy over the window (pip install py-spy); None when it is missing."""
    py_spy = Path(sys.executable).with_name("py-spy")
    if not py_spy.exists():
        print("loadtest: --profile needs py-spy (pip install py-spy); continuing without", file=sys.stderr)
        return None
    return subprocess.Popen(
        [str(py_spy), "record", "--pid", str(pid), "--duration", str(int(seconds)), "--format", "raw",
         "--nonblocking", "--output", str(data_dir / "profile.txt")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _finish_profiler(profiler: subprocess.Popen[bytes], data_dir: Path) -> dict[str, Any]:
    """Wait for py-spy and summarise its samples: share of samples by function, self and total."""
    profiler.wait(120)
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    count = 0
    path = data_dir / "profile.txt"
    if not path.exists():
        return {"error": "py-spy wrote no profile"}
    for line in path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not samples.isdigit():
            continue
        weight = int(samples)
        count += weight
        frames = [frame.split(" (")[0] + " " + frame.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1] for frame in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + weight
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + weight

    def top(table: dict[str, int]) -> list[list[Any]]:
        ranked = sorted(table.items(), key=lambda item: -item[1])[:15]
        return [[name, round(weight * 100 / max(1, count), 1)] for name, weight in ranked]

    return {"samples": count, "self_percent": top(own), "total_percent": top(total), "raw": str(path)}


async def _sample_rss(pid: int, timeline: list[tuple[float, int]], interval: float = 10.0) -> None:
    """Append (seconds into the window, RSS bytes) every ``interval`` seconds."""
    started = time.monotonic()
    while True:
        timeline.append((time.monotonic() - started, process_rss_bytes(pid)))
        await asyncio.sleep(interval)


async def _recording_stats(
    session: aiohttp.ClientSession, base: str, headers: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    """Sum recorded bytes and segments, and count gaps other than flaps, from the recordings API.

    Only the last five minutes are checked, so that segments deleted by a
    retention quota during a long run are not counted as missing.
    """
    end = time.time()
    start = end - min(args.warmup + args.duration, 300)
    stamp = lambda value: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))  # noqa: E731
    segments = 0
    written = 0
    missing = 0
    for index in range(args.cameras):
        url = f"{base}/api/recordings/cam{index}?start={stamp(start)}&end={stamp(end)}"
        async with session.get(url, headers=headers) as response:
            if response.status != 200:
                missing += 1
                continue
            body = await response.json()
        items = body.get("segments", body.get("items", []))
        segments += len(items)
        written += sum(item.get("bytes", 0) for item in items)
        expected_flap = is_flapping(index, args.flap_share) or is_jumping(index, args.jump_share)
        unexpected_gaps = [gap for gap in body.get("gaps", []) if gap.get("cause") not in ("service_stopped",)]
        if not items or (unexpected_gaps and not expected_flap):
            missing += 1
    return {"segments": segments, "bytes_written": written, "cameras_with_missing_recording": missing}


def _report(
    args: argparse.Namespace,
    results: list[ViewerResult],
    probes: list[ViewerResult],
    views: dict[str, dict[str, Any]],
    fleet: Fleet,
    fleet_stats: dict[str, Any],
    window: float,
    cpu_percent: float | None,
    rss: int,
    baseline_rss: int,
    rss_timeline: list[tuple[float, int]],
    ingest_mbps: float,
    egress_mbps: float,
    recording: dict[str, Any] | None,
) -> dict[str, Any]:
    states = {camera_id: view["state"] for camera_id, view in views.items()}
    reconnects = sum(view.get("reconnects", 0) for view in views.values())
    healthy = [result for result in results if not result.flapping]
    flapping_cameras = sum(is_flapping(index, args.flap_share) for index in range(args.cameras))
    cold = [r.first_keyframe_seconds for r in results if r.cold and r.first_keyframe_seconds is not None]
    warm = [r.first_keyframe_seconds for r in results + probes if not r.cold and r.first_keyframe_seconds is not None]
    first_bytes = [r.first_byte_seconds for r in results + probes if r.first_byte_seconds is not None]
    stalled = [r for r in healthy if r.stalls]
    dropped = [r for r in healthy if r.disconnected or r.error]
    no_keyframe = [r for r in healthy if r.first_keyframe_seconds is None]
    regressions = sum(r.timestamp_regressions for r in healthy)
    upstreams = fleet_stats.get("connections_open", 0)

    checks = [
        {
            "name": "one upstream per camera",
            "ok": fleet.max_sessions_per_path <= 1 and upstreams <= args.cameras,
            "detail": f"{upstreams} upstream connections for {args.cameras} cameras, "
            f"at most {fleet.max_sessions_per_path} sessions for one camera",
        },
        {
            "name": "healthy cameras live",
            "ok": sum(states.get(f"cam{i}") == "live" for i in range(args.cameras)) >= args.cameras - flapping_cameras,
            "detail": f"{sum(state == 'live' for state in states.values())} of {args.cameras} live",
        },
        {"name": "no stalled viewer", "ok": not stalled, "detail": f"{len(stalled)} healthy viewers stalled"},
        {"name": "no dropped viewer", "ok": not dropped, "detail": f"{len(dropped)} healthy viewers dropped"},
        {"name": "keyframe for every viewer", "ok": not no_keyframe, "detail": f"{len(no_keyframe)} without a keyframe"},
        {"name": "timestamps advance", "ok": regressions == 0, "detail": f"{regressions} regressions"},
    ]
    if recording is not None:
        checks.append(
            {
                "name": "no missing recording",
                "ok": recording["cameras_with_missing_recording"] == 0,
                "detail": f"{recording['cameras_with_missing_recording']} cameras with segments missing",
            }
        )
    if args.soak and rss_timeline:
        # Memory at the end of the window against minute 5 of it (or its first sample).
        reference = next((value for seconds, value in rss_timeline if seconds >= 300), rss_timeline[0][1])
        growth = (rss_timeline[-1][1] - reference) / reference
        checks.append(
            {
                "name": "memory stable",
                "ok": growth <= 0.05,
                "detail": f"RSS {growth * 100:+.1f} % from minute 5 to the end",
            }
        )
    per_camera_rss = (rss - baseline_rss) / args.cameras if rss and baseline_rss else None
    return {
        "command": " ".join(["python -m loadtest", *sys.argv[1:]]),
        "machine": {"cores": os.cpu_count(), "model": _cpu_model(), "memory_bytes": _memory_bytes()},
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "time_utc": time.strftime("%H:%M:%S", time.gmtime()),
        "commit": _git_commit(),
        "cameras": args.cameras,
        "viewers_per_camera": args.viewers_per_camera,
        "protocol": args.protocol,
        "clip": args.clip,
        "record": args.record,
        "window_seconds": round(window, 1),
        "cameras_live": sum(state == "live" for state in states.values()),
        "upstream_connections": upstreams,
        "upstream_reconnects": reconnects,
        "flapping_cameras": [f"cam{index}" for index in range(args.cameras) if is_flapping(index, args.flap_share)],
        "ingest_mbps": round(ingest_mbps, 1),
        "egress_mbps": round(egress_mbps, 1),
        "cpu_percent_of_core": None if cpu_percent is None else _percent(cpu_percent),
        "cpu_percent_per_camera": None if cpu_percent is None else _percent(cpu_percent / args.cameras),
        "cpu_percent_per_gbps": None if cpu_percent is None or not egress_mbps else _percent(cpu_percent / (egress_mbps / 1000)),
        "rss_bytes": rss,
        "rss_baseline_bytes": baseline_rss,
        "rss_per_camera_bytes": None if per_camera_rss is None else round(per_camera_rss),
        "first_byte": summarize(first_bytes),
        "first_keyframe_cold": summarize(cold),
        "first_keyframe_warm": summarize(warm),
        "viewers": len(results),
        "viewers_stalled": len(stalled),
        "viewers_dropped": len(dropped),
        "recording": recording,
        "rss_timeline": [[round(seconds), value] for seconds, value in rss_timeline],
        "checks": checks,
        "ok": all(check["ok"] for check in checks),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _memory_bytes() -> int:
    try:
        with open("/proc/meminfo") as handle:
            return int(handle.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0


def print_table(report: dict[str, Any]) -> None:
    def fmt(value: Any) -> str:
        return "-" if value is None else str(value)

    rows = [
        ("cameras / live", f"{report['cameras']} / {report['cameras_live']}"),
        ("upstream connections (reconnects)", f"{report['upstream_connections']} ({report['upstream_reconnects']})"),
        ("viewers (stalled, dropped)", f"{report['viewers']} ({report['viewers_stalled']}, {report['viewers_dropped']})"),
        ("ingest / egress Mbit/s", f"{report['ingest_mbps']} / {report['egress_mbps']}"),
        ("CPU % of one core (per camera)", f"{fmt(report['cpu_percent_of_core'])} ({fmt(report['cpu_percent_per_camera'])})"),
        ("CPU % per delivered Gbit/s", fmt(report["cpu_percent_per_gbps"])),
        (
            "simulator / swarm CPU % of a core",
            f"{fmt(report.get('simulator_cpu_percent_of_core'))} / {fmt(report.get('swarm_cpu_percent_of_core'))}",
        ),
        ("RSS MB (per camera MB)", f"{report['rss_bytes'] / 1e6:.1f} ({fmt(None if report['rss_per_camera_bytes'] is None else round(report['rss_per_camera_bytes'] / 1e6, 2))})"),
        ("first byte p50/p95/p99 ms", _triple(report["first_byte"])),
        ("first keyframe cold p50/p95/p99 ms", _triple(report["first_keyframe_cold"])),
        ("first keyframe warm p50/p95/p99 ms", _triple(report["first_keyframe_warm"])),
    ]
    if report.get("recording"):
        recording = report["recording"]
        rows.append(("recorded segments / MB", f"{recording['segments']} / {recording['bytes_written'] / 1e6:.1f}"))
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    for check in report["checks"]:
        print(f"{'PASS' if check['ok'] else 'FAIL'}  {check['name']}: {check['detail']}")


def _triple(summary: dict[str, Any]) -> str:
    if not summary["n"]:
        return "- (none measured)"
    return f"{summary['p50_ms']} / {summary['p95_ms']} / {summary['p99_ms']} (n={summary['n']})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=int, default=10, help="simulated cameras (default 10)")
    parser.add_argument(
        "--viewers-per-camera", type=int, default=1,
        help="viewers per camera and protocol (default 1; 0 with --record or --always measures ingest alone)",
    )
    parser.add_argument("--protocol", choices=("flv", "hls", "both"), default="flv", help="what the viewers fetch")
    parser.add_argument("--duration", type=float, default=60, help="steady measurement window in seconds (default 60)")
    parser.add_argument("--warmup", type=float, default=10, help="seconds between connecting and measuring (default 10)")
    parser.add_argument("--clip", default="h264", help="h264 or h265 (the 4 MP clips), or an MP4 path")
    parser.add_argument("--bitrate-spread", type=float, default=0.0, help="extra bit rate of the busiest cameras (0.5 = +50 %%)")
    parser.add_argument("--flap-share", type=float, default=0.0, help="share of cameras that drop and come back")
    parser.add_argument("--flap-up-seconds", type=float, default=20.0, help="seconds a flapping camera streams before dropping")
    parser.add_argument("--flap-down-seconds", type=float, default=5.0, help="seconds a flapping camera stays down")
    parser.add_argument("--jump-share", type=float, default=0.0, help="share of cameras whose clock jumps an hour once")
    parser.add_argument("--record", action="store_true", help="register cameras with record: true (mode always)")
    parser.add_argument("--always", action="store_true", help="register cameras with mode always, without recording")
    parser.add_argument("--target", help="URL of a running Pantau to test instead of starting one")
    parser.add_argument("--pid", type=int, help="process id of the --target Pantau, for CPU and memory")
    parser.add_argument(
        "--key", default=os.environ.get("PANTAU_LOADTEST_KEY", ""),
        help="admin token sent as Bearer by the admin API calls and every viewer (default: $PANTAU_LOADTEST_KEY; "
        "without --target, a random one given to the Pantau started here)",
    )
    parser.add_argument("--pantau-env", action="append", default=[], metavar="NAME=VALUE", help="extra setting for the Pantau it starts")
    parser.add_argument("--data-dir", help="PANTAU_DATA_DIR for the Pantau it starts (default: a new temporary directory)")
    parser.add_argument("--json", default="loadtest-result.json", help="where to write the JSON report")
    parser.add_argument("--profile", action="store_true", help="sample Pantau with py-spy during the window and summarise it")
    parser.add_argument("--soak", action="store_true", help="also check that memory grows by at most 5 %% after minute 5")
    parser.add_argument("--inject-extra-upstream", action="store_true", help="open a second upstream to one camera (tests the check)")
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    for setting in args.pantau_env:
        name = setting.partition("=")[0]
        if name in LOADTEST_OWNED_SETTINGS:
            replacement = {"PANTAU_ADMIN_TOKEN": "; use --key", "PANTAU_DATA_DIR": "; use --data-dir"}.get(name, "")
            parser.error(f"--pantau-env {name}: the load test sets it for the Pantau it starts{replacement}")
    if args.viewers_per_camera < 0:
        parser.error("--viewers-per-camera must be 0 or more")
    if args.viewers_per_camera == 0 and not (args.record or args.always):
        parser.error("--viewers-per-camera 0 needs --record or --always: on_demand cameras connect only for a viewer")
    if args.target and not args.key:
        print("loadtest: note: no --key given; a Pantau with access control on will answer 401", file=sys.stderr)
    try:
        import uvloop

        report = uvloop.run(run(args))
    except KeyboardInterrupt:
        return 130
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"report written to {args.json}")
    return 0 if report.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
