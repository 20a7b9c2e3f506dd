"""Serve MP4 clips over RTSP with GStreamer's gst-rtsp-server, for the tests.

Debian's ``python3-gi`` imports only in ``/usr/bin/python3``, so the tests run
this file as a subprocess of that interpreter instead of importing it.

Each ``--mount PATH=FILE.mp4`` serves one clip, demuxed with qtdemux and
payloaded without re-encoding, so RTP timestamps carry the clip's own PTS
(B-frames included). Loop the clip into a longer file first (ffmpeg
``-stream_loop``) when a test needs more than one pass.

Events go to stdout as JSON lines, so a test can count upstream connections
on the server side: ``{"event": "ready", "port": N}``, ``{"event":
"client_connected", "remote": "IP:PORT"}`` and ``{"event": "client_closed"}``.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def probe_streams(path: str) -> list[str]:
    """Return the codec names of the clip's streams, in file order."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0", path],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def build_launch(path: str) -> str:
    """Build a launch line that payloads every stream of the MP4 at ``path``."""
    codecs = probe_streams(path)
    parts = [f'( filesrc location="{path}" ! qtdemux name=demux']
    video_index = 0
    audio_index = 0
    for pay_index, codec in enumerate(codecs):
        if codec == "h264":
            parts.append(
                f"demux.video_{video_index} ! queue ! h264parse ! "
                f"rtph264pay name=pay{pay_index} pt=96 config-interval=-1"
            )
            video_index += 1
        elif codec == "hevc":
            parts.append(
                f"demux.video_{video_index} ! queue ! h265parse ! "
                f"rtph265pay name=pay{pay_index} pt=96 config-interval=-1"
            )
            video_index += 1
        elif codec == "aac":
            parts.append(
                f"demux.audio_{audio_index} ! queue ! aacparse ! "
                f"rtpmp4gpay name=pay{pay_index} pt=97"
            )
            audio_index += 1
        else:
            raise SystemExit(f"unsupported codec {codec!r} in {path}")
    return " ".join(parts) + " )"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    parser.add_argument("--mount", action="append", default=[], help="PATH=FILE.mp4")
    parser.add_argument(
        "--auth",
        default="",
        help="USER:PASSWORD required (Basic) on mounts whose path starts with /secure",
    )
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()

    if args.auth:
        user, password = args.auth.split(":", 1)
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        basic = GstRtspServer.RTSPAuth.make_basic(user, password)
        auth.add_basic(basic, token)
        server.set_auth(auth)

    for spec in args.mount:
        mount_path, clip = spec.split("=", 1)
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(build_launch(clip))
        factory.set_shared(False)
        if args.auth:
            permissions = GstRtspServer.RTSPPermissions()
            # gst-rtsp-server answers 404 when "access" is denied and 401 when
            # only "construct" is, so anonymous clients may see a secure mount
            # but must authenticate to play it.
            secure = mount_path.startswith("/secure")
            for role in ("user", "anonymous"):
                permissions.add_role(role)
                permissions.add_permission_for_role(role, "media.factory.access", True)
                allowed = role == "user" or not secure
                permissions.add_permission_for_role(role, "media.factory.construct", allowed)
            factory.set_permissions(permissions)
        mounts.add_factory(mount_path, factory)

    if args.auth:
        # Unauthenticated requests get the "anonymous" role, so that open
        # mounts stay open while /secure ones demand credentials.
        anonymous = GstRtspServer.RTSPToken()
        anonymous.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "anonymous")
        server.get_auth().set_default_token(anonymous)

    def on_client_connected(_server: object, client: GstRtspServer.RTSPClient) -> None:
        connection = client.get_connection()
        emit("client_connected", remote=connection.get_ip())
        client.connect("closed", lambda _client: emit("client_closed"))

    server.connect("client-connected", on_client_connected)
    server.attach(None)
    emit("ready", port=server.get_bound_port())

    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
    loop.run()
    sys.exit(0)


if __name__ == "__main__":
    main()
