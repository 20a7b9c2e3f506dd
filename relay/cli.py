"""The ``pantau`` command: ``serve``, ``demo`` and the operator tools."""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal
import sys
import tempfile
from pathlib import Path
from collections.abc import Awaitable, Callable

from aiohttp import web

from relay.cameras import CameraStore
from relay.data_lock import DataDirInUse, lock_data_dir
from relay.import_command import add_import_parser, run_import
from relay.logs import configure_logging, get_logger
from relay.service import Service
from relay.settings import Settings, SettingsError, help_table, load_settings, unknown_variables
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
    check = commands.add_parser(
        "check",
        help="validate a cameras file without starting the service",
        description="Validate the cameras file (PANTAU_CAMERAS, or FILE) and list every rejected entry.",
    )
    check.add_argument("file", nargs="?", help="cameras file to check (default: the configured one)")
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
    audit = commands.add_parser(
        "audit",
        help="check the audit log",
        description="Tools for the audit log in PANTAU_DATA_DIR/audit.",
    )
    audit_commands = audit.add_subparsers(dest="audit_command", metavar="AUDIT_COMMAND", required=True)
    verify = audit_commands.add_parser(
        "verify",
        help="check the SHA-256 chain of the audit log",
        description=(
            "Check that every line of the audit log carries the SHA-256 of the line before it and that the "
            "newest line is the one head.json names. Prints the first broken line. Exit status: 0 intact, "
            "1 broken or missing, 2 usage error."
        ),
    )
    verify.add_argument("directory", nargs="?", help="audit directory (default: $PANTAU_DATA_DIR/audit)")
    return parser


def verify_audit(directory: Path) -> int:
    """Print whether the audit chain in ``directory`` is intact; return the exit status."""
    from relay.audit import verify_directory

    result = verify_directory(directory)
    events = f"{result.lines} event{'s' if result.lines != 1 else ''}"
    files = f"{result.files} file{'s' if result.files != 1 else ''}"
    if result.ok:
        print(f"intact: {events} in {files} in {directory}")
        return 0
    print(f"broken: {result.problem}")
    print(f"checked {events} in {files} in {directory} before that, all intact")
    return 1


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
    reloads: set[asyncio.Task[None]] = set()

    def reload() -> None:
        task = asyncio.create_task(service.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)

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


def check_data_dir(path: Path) -> str | None:
    """Return why the data directory cannot be used, or None when it is writable."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".pantau-write-check-"):
            pass
    except OSError as exc:
        return f"cannot create or write a file there ({exc.strerror or exc}); use a writable directory"
    return None


def check_cameras_file(path: Path) -> int:
    """Print whether the cameras file is valid; return the exit code (0 valid, 1 not)."""
    store = CameraStore(path)
    store.load()
    if store.file_error:
        print(f"invalid: {store.file_error}")
        return 1
    for error in store.errors:
        field = f" field {error.field}" if error.field else ""
        print(f"rejected: camera {error.camera_id}{field}: {error.reason}")
    print(f"{path}: {len(store.cameras)} cameras valid, {len(store.errors)} rejected")
    return 1 if store.errors else 0


def raise_file_limit() -> None:
    """Raise the open-file limit to the hard limit: every camera and client is a socket."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_usage(sys.stderr)
        print("pantau: a command is required (serve, demo, check, import, audit); see pantau --help", file=sys.stderr)
        return 2
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"pantau: {exc}", file=sys.stderr)
        return 2
    if args.command == "check":
        return check_cameras_file(Path(args.file) if args.file else settings.cameras_path)
    if args.command == "audit":
        return verify_audit(Path(args.directory) if args.directory else Path(settings.data_dir) / "audit")
    problem = check_data_dir(Path(settings.data_dir))
    if problem:
        print(f"pantau: invalid PANTAU_DATA_DIR={settings.data_dir!r}: {problem}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    for name in unknown_variables():
        get_logger().warning("unknown_setting", variable=name, hint="not a Pantau setting; see pantau --help")
    raise_file_limit()

    if args.command == "import":
        return run_import(args, settings)
    try:
        lock_data_dir(Path(settings.data_dir))  # held until the process ends
    except DataDirInUse:
        print(
            f"pantau: another Pantau process is using PANTAU_DATA_DIR={settings.data_dir!r}; "
            "stop it or give this one another data directory",
            file=sys.stderr,
        )
        return 2
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
