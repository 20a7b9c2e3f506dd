"""Quirk replay: an RTSP server that behaves like a camera of the quirk corpus.

Given case files (``tests/data/cameras/qNN-*.txt`` or an operator's own file
in the same format), it serves every scenario of every case on its own
port. A scenario responds to OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER and
TEARDOWN with the case's responses: addresses rewritten to loopback and
the mount's port, CSeq echoed under the case's spelling of the header,
Content-Length recomputed, Session and Transport kept as the camera wrote
them (only ports, channels and addresses are filled in). After PLAY it
streams a test clip with the case's payload types, SSRC, sequence and
timestamp start, and the packetisation and timing faults the case
describes (see ``loadtest.cases.Behaviour``).

The server checks what a camera would check: a SETUP must name a media
section's control URL (joined to the base the way live555 does, or used
verbatim when absolute), credentials must match when the case requires
them, and a session without keep-alives expires after its timeout.

Every request and notable event is printed as one JSON line on stdout, so
tests and operators can see what a client did. Run
``python -m loadtest.replay CASE_FILE...`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from typing import Any

from loadtest.cases import Scenario, load_scenarios
from loadtest.replay_media import MediaLibrary
from loadtest.replay_mount import Mount, prepare_mount
from loadtest.replay_session import Emit, ReplaySession


class ReplayServer:
    """Serve scenarios, one listening socket each, all in one event loop."""

    def __init__(self, scenarios: list[Scenario], library: MediaLibrary, emit: Emit) -> None:
        self.scenarios = scenarios
        self.library = library
        self.emit = emit
        self.mounts: list[Mount] = []
        self._servers: list[asyncio.Server] = []

    async def start(self, host: str = "127.0.0.1", base_port: int = 0) -> None:
        """Listen for every scenario: on ``base_port`` and up, or on free ports when it is 0."""
        loop = asyncio.get_running_loop()
        for index, scenario in enumerate(self.scenarios):
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, base_port + index if base_port else 0))
            # The mount's port goes into its SDP and headers, so the socket is bound first.
            mount = prepare_mount(scenario, self.library, sock.getsockname()[1])
            self.mounts.append(mount)
            server = await loop.create_server(lambda mount=mount: ReplaySession(mount, self.emit), sock=sock)
            self._servers.append(server)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()


# --- command line -----------------------------------------------------------------------------------


def _print_event(event: dict[str, Any]) -> None:
    event.setdefault("time", round(time.time(), 3))
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def serve(
    paths: list[str], host: str, base_port: int, options: list[str], emit: Emit = _print_event
) -> None:
    server = ReplayServer(load_scenarios(paths, options), MediaLibrary(), emit)
    await server.start(host, base_port)
    emit({"event": "ready", "mounts": [mount.description() for mount in server.mounts]})
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.replay",
        description="Serve camera quirk cases as RTSP cameras, one port per scenario; events go to stdout as JSON lines.",
    )
    parser.add_argument("cases", nargs="+", help="case files (tests/data/cameras/qNN-*.txt or your own)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        default=8554,
        help="port of the first scenario; the next ones count up; 0 picks free ports",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY[=VALUE]",
        help="replay option applied to every scenario, as in a '# replay:' line (for example timestamp-step=3600)",
    )
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(serve(args.cases, args.host, args.port, args.option))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
