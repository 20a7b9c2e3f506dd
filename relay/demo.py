"""``pantau demo``: the service plus a simulated camera serving real footage on loopback."""

from __future__ import annotations

import sys

from loadtest.clip import load_clip
from loadtest.simulator import DEMO_CLIP, SimulatorServer
from relay.cameras import CameraConfig, Location, Owner
from relay.cli import run_service
from relay.service import Service
from relay.settings import Settings

DEMO_ID = "demo"


async def run_demo(settings: Settings) -> None:
    simulator = SimulatorServer({"/demo": load_clip(DEMO_CLIP)})
    await simulator.start("127.0.0.1", 0)

    async def register(service: Service) -> None:
        if DEMO_ID in service.cameras:
            return
        # The demo camera lives in memory only, so the cameras file stays as it was.
        service.add_ephemeral_camera(
            CameraConfig(
                id=DEMO_ID,
                name="Demo: Jalan Raya Kuta (simulated)",
                url=simulator.url("/demo"),
                owner=Owner(category="pemkab", name="Diskominfo Badung"),
                location=Location(kecamatan="Kuta", desa="Kuta", lat=-8.726, lon=115.177),
                mode="always",
            )
        )
        host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::") else settings.http_host
        base = f"http://{host}:{settings.http_port}"
        print(
            "\nPantau demo is running. Open the demo camera's live stream with:\n"
            f"  ffplay {base}/live/demo.flv\n"
            f"  vlc {base}/live/demo.flv\n"
            f"  vlc {base}/live/demo/index.m3u8   (HLS)\n"
            f"Status page (Halaman status): {base}/\n"
            f"Camera status: {base}/api/cameras/demo\n"
            "Stop with Ctrl+C.\n",
            file=sys.stderr,
            flush=True,
        )

    try:
        await run_service(settings, before_ready=register)
    finally:
        await simulator.close()
