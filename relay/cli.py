"""The ``pantau`` command: ``serve``, ``demo`` and the operator tools."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable

from aiohttp import web

from relay.import_command import add_import_parser, run_import
from relay.logs import configure_logging, get_logger
from relay.service import Service
from relay.settings import Settings, SettingsError, help_table, load_settings
from relay.web import create_app

SHUTDOWN_GRACE_SECONDS = 3.0

DESCRIPTION = (
    "Pantau: media relay and recorder for city CCTV. One RTSP connection per camera, "
    "remuxed (never re-encoded) to HTTP-FLV and HLS, recorded to rolling MP4 segments."
)


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="pantau", description=DESCRIPTION, epilog=help_table(), formatter_class=formatter
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        "serve",
        help="run the service with the cameras file",
        description="Run the service. Settings come from the environment variables below.",
        epilog=help_table(),
        formatter_class=formatter,
    )
    commands.add_parser(
        "demo",
        help="run the service with a built-in demo camera",
        description=(
            "Run the service with a camera simulator on loopback that serves a real "
            "street-camera clip, registered as camera 'demo'."
        ),
        epilog=help_table(),
        formatter_class=formatter,
    )
    add_import_parser(commands, formatter, help_table())
    return parser


async def run_service(
    settings: Settings, before_ready: Callable[[Service], Awaitable[None]] | None = None
) -> None:
    """Run until SIGTERM or SIGINT, then close clients and upstreams and return."""
    log = get_logger()
    service = Service(settings)
    app = create_app(service)
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
        access_log=None,
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port, backlog=4096)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    await service.start()
    if before_ready is not None:
        await before_ready(service)
    try:
        await site.start()
    except OSError as exc:
        log.error("http_listen_failed", host=settings.http_host, port=settings.http_port, reason=str(exc))
        await service.stop()
        await runner.cleanup()
        raise SystemExit(1) from exc
    log.info("http_listening", host=settings.http_host, port=settings.http_port)

    await stop.wait()
    log.info("shutdown_started")
    await service.stop()
    await runner.cleanup()
    log.info("shutdown_complete")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"pantau: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)

    if args.command == "import":
        return run_import(args, settings)
    if args.command == "serve":
        coroutine = run_service(settings)
    elif args.command == "demo":
        from relay.demo import run_demo

        coroutine = run_demo(settings)
    else:
        parser.error(f"unknown command {args.command}")
    try:
        import uvloop

        uvloop.run(coroutine)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
