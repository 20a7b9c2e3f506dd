"""The operator status page at ``GET /`` and the files it loads.

The page itself (``relay/static``) ships with Pantau. Its players, hls.js
and mpegts.js, come from npm (pinned in ``package.json``, installed by
``npm ci``) and are served from ``node_modules`` by Pantau, so the page
needs no internet access. When they are missing, their URLs return 404 with
the fix, the page says so, and everything else keeps working.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from relay.logs import get_logger
from relay.settings import Settings
from relay.web import SERVICE_KEY, json_error, service_of

STATIC_DIR = Path(__file__).resolve().parent / "static"
SOURCE_TREE = Path(__file__).resolve().parent.parent
STATIC_FILES = {
    "status.js": "text/javascript",
    "status.css": "text/css",
}
# URL name -> (npm package, file inside it)
PLAYER_FILES = {
    "hls.min.js": ("hls.js", "dist/hls.min.js"),
    "mpegts.js": ("mpegts.js", "dist/mpegts.js"),
}
NO_CACHE = {"Cache-Control": "no-cache"}

log = get_logger(component="status_page")


def node_modules_dir(settings: Settings) -> Path:
    return Path(settings.node_modules) if settings.node_modules else SOURCE_TREE / "node_modules"


def missing_players(settings: Settings) -> list[str]:
    """Return the npm packages whose player file is not installed."""
    root = node_modules_dir(settings)
    return [package for package, path in PLAYER_FILES.values() if not (root / package / path).is_file()]


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={**NO_CACHE, "Content-Type": "text/html; charset=utf-8"})


async def static_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    content_type = STATIC_FILES.get(name)
    if content_type is None:
        return json_error(404, "not_found", f"no static file {name!r}")
    return web.FileResponse(STATIC_DIR / name, headers={**NO_CACHE, "Content-Type": f"{content_type}; charset=utf-8"})


async def player_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    entry = PLAYER_FILES.get(name)
    if entry is None:
        return json_error(404, "not_found", f"no player file {name!r}")
    package, relative = entry
    root = node_modules_dir(service_of(request).settings)
    path = root / package / relative
    if not path.is_file():
        return json_error(
            404,
            "player_not_installed",
            f"{package} is not installed at {root}: run `npm ci` in the Pantau source directory "
            "(deploy/bootstrap.sh does it) or set PANTAU_NODE_MODULES",
        )
    return web.FileResponse(path, headers={**NO_CACHE, "Content-Type": "text/javascript; charset=utf-8"})


async def log_missing_players(app: web.Application) -> None:
    settings = app[SERVICE_KEY].settings
    missing = missing_players(settings)
    if missing:
        log.warning(
            "status_page_players_missing",
            packages=missing,
            node_modules=str(node_modules_dir(settings)),
            fix="run npm ci in the Pantau source directory or set PANTAU_NODE_MODULES",
        )


def add_status_page_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/static/vendor/{name}", player_file)
    app.router.add_get("/static/{name}", static_file)
    app.on_startup.append(log_missing_players)
