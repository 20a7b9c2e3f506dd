"""``pantau demo``: the service plus a simulated camera serving real footage on loopback."""

from __future__ import annotations

import sys
import time

from loadtest.clip import load_clip
from loadtest.simulator import DEMO_CLIP, SimulatorServer
from relay.access import TokenClaims, admin_key_id, secret_paths, sign_token
from relay.cameras import CameraConfig, Location, Owner
from relay.cli import run_service
from relay.service import Service
from relay.settings import Settings

DEMO_ID = "demo"


def demo_banner(settings: Settings, base: str) -> str:
    """Return the start message: the admin token and signed stream URLs when access control is on."""
    query = ""
    lines = ["", "Pantau demo is running."]
    if settings.auth == "on":
        admin_path, secret_path = secret_paths(settings.data_dir)
        admin_token = settings.admin_token or admin_path.read_text().strip()
        token_secret = settings.token_secret or secret_path.read_text().strip()
        expires = int(time.time() + settings.token_max_seconds)
        token = sign_token(token_secret, TokenClaims(cam=DEMO_ID, act=["live"], exp=expires, k=admin_key_id(admin_token)))
        query = f"?token={token}"
        where = "PANTAU_ADMIN_TOKEN" if settings.admin_token else str(admin_path)
        lines += [
            f"Admin token (Token admin), from {where}:",
            f"  {admin_token}",
            "Enter it on the status page, or send it as Authorization: Bearer to the API.",
            f"The stream URLs below carry a signed token valid for {settings.token_max_seconds / 3600:g} h.",
        ]
    lines += [
        "Open the demo camera's live stream with:",
        f'  ffplay "{base}/live/demo.flv{query}"',
        f'  vlc "{base}/live/demo.flv{query}"',
        f'  vlc "{base}/live/demo/index.m3u8{query}"   (HLS)',
        f"Status page (Halaman status): {base}/",
        f"Camera status: {base}/api/cameras/demo" + (" (send the admin token)" if settings.auth == "on" else ""),
        "Stop with Ctrl+C.",
        "",
    ]
    return "\n".join(lines)


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
        print(demo_banner(settings, base), file=sys.stderr, flush=True)

    try:
        await run_service(settings, before_ready=register)
    finally:
        await simulator.close()
