"""``pantau import FILE.csv``: bulk registration from the command line.

By default the CSV goes to the running service's ``POST /api/cameras/import``,
which applies the rows at once. ``--direct`` validates and writes the
cameras file itself, for a service that is stopped: a running service
would overwrite such a change with its next write-back.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, TextIO

from relay.access import ADMIN_TOKEN_FILE
from relay.cameras import CameraStore, CameraStoreError
from relay.data_lock import DataDirInUse, lock_data_dir
from relay.importer import ImportRules, plan_import
from relay.settings import Settings

HTTP_TIMEOUT_SECONDS = 120


def add_import_parser(commands: Any, formatter: type[argparse.HelpFormatter], epilog: str) -> None:
    parser = commands.add_parser(
        "import",
        help="register cameras from a CSV file",
        description=(
            "Register cameras from a CSV file (columns: id, name, rtsp_url, owner_category, owner_name, "
            "kecamatan, desa, lat, lon, mode, record, installed_on, retention_days, transport). Every row is checked "
            "first; if any row is invalid, nothing is applied and every problem is listed. "
            "Exit status: 0 applied (or valid with --dry-run), 1 invalid rows or rejected by the service, "
            "2 usage error."
        ),
        epilog=epilog,
        formatter_class=formatter,
    )
    parser.add_argument("file", type=Path, help="the CSV file (UTF-8)")
    parser.add_argument("--dry-run", action="store_true", help="only validate; change nothing")
    parser.add_argument("--replace", action="store_true", help="replace cameras whose id already exists")
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--server",
        metavar="URL",
        help="base URL of the running service (default: http://127.0.0.1:$PANTAU_HTTP_PORT)",
    )
    parser.add_argument(
        "--token",
        help="admin token for the service (default: $PANTAU_ADMIN_TOKEN, else the file "
        "$PANTAU_DATA_DIR/admin-token that the service generated)",
    )
    target.add_argument(
        "--direct",
        action="store_true",
        help="write the cameras file ($PANTAU_CAMERAS) directly; rejected while the service runs on this data directory",
    )


def run_import(args: argparse.Namespace, settings: Settings, out: TextIO = sys.stdout) -> int:
    """Run ``pantau import``; return the exit status."""
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        print(f"pantau import: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if args.direct:
        try:
            lock_data_dir(Path(settings.data_dir))  # held until this command ends
        except DataDirInUse:
            print(
                f"pantau import: the service is running on PANTAU_DATA_DIR={settings.data_dir!r} and would "
                "overwrite the cameras file; import without --direct to go through its API",
                file=sys.stderr,
            )
            return 2
        status, body = import_direct(data, settings, args.dry_run, args.replace)
    else:
        base = args.server or f"http://127.0.0.1:{settings.http_port}"
        token = args.token or settings.admin_token or stored_admin_token(settings)
        status, body = import_via_server(base, data, args.dry_run, args.replace, token)
    print_outcome(status, body, out)
    return 0 if status == 200 else 1


def import_direct(data: bytes, settings: Settings, dry_run: bool, replace: bool) -> tuple[int, dict[str, Any]]:
    """Validate against the cameras file and, unless ``dry_run``, write it."""
    store = CameraStore(settings.cameras_path)
    store.load()
    if store.file_error:
        return 409, {"error": "cameras_file_invalid", "reason": store.file_error}
    plan = plan_import(data, store.cameras, ImportRules(settings), replace=replace)
    if plan.errors:
        return 400, plan.error_body(dry_run)
    if not dry_run:
        try:
            store.put_many(plan.items)
        except CameraStoreError as exc:
            return 409, {"error": "cameras_file_not_writable", "reason": str(exc)}
    return 200, plan.summary(dry_run, applied=not dry_run)


def stored_admin_token(settings: Settings) -> str | None:
    """Return the admin token the service generated in the data directory, if it is readable."""
    try:
        return (Path(settings.data_dir) / ADMIN_TOKEN_FILE).read_text().strip() or None
    except OSError:
        return None


def import_via_server(
    base: str, data: bytes, dry_run: bool, replace: bool, token: str | None = None
) -> tuple[int, dict[str, Any]]:
    query = urllib.parse.urlencode({"dry_run": str(dry_run).lower(), "replace": str(replace).lower()})
    headers = {"Content-Type": "text/csv; charset=utf-8"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"{base.rstrip('/')}/api/cameras/import?{query}", data=data, method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        try:
            return exc.code, json.loads(payload)
        except json.JSONDecodeError:
            return exc.code, {"error": "http_error", "reason": payload.decode(errors="replace")[:500]}
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return 503, {
            "error": "service_unreachable",
            "reason": f"cannot reach the service at {base}: {reason}. Start it, pass --server, "
            "or use --direct while it is stopped",
        }


def print_outcome(status: int, body: dict[str, Any], out: TextIO) -> None:
    """Print the result for an operator, in Bahasa Indonesia with English beside it."""
    created, replaced = len(body.get("created", [])), len(body.get("replaced", []))
    if status == 200:
        if body.get("applied"):
            print(f"Diterapkan / applied: {created} kamera baru / new, {replaced} diganti / replaced.", file=out)
        else:
            print(
                f"Uji saja, tidak ada yang diubah / dry run, nothing changed: {body.get('rows', 0)} baris valid / "
                f"rows valid ({created} baru / new, {replaced} diganti / replaced).",
                file=out,
            )
        return
    print(f"Tidak ada yang diterapkan / nothing applied: {body.get('reason', body.get('error'))}", file=out)
    for item in body.get("items", []):
        column = f", kolom / column {item['column']}" if item.get("column") else ""
        print(f"  baris / line {item['line']}{column}: {item['reason']}", file=out)
