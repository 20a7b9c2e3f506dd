"""structlog set-up: JSON lines in production, readable text in a terminal.

Log events are short snake_case names (``camera_connected``) with the ids
involved as fields. Camera URLs are always passed through
``relay.cameras.redact_url`` before they reach a log call, and the
``_mask_secrets`` processor masks any ``user:password@`` that slips through
in a string field.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

_USERINFO = re.compile(r"(rtsps?://[^:/@\s]+):([^@\s/]+)@")


def _mask_secrets(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in event.items():
        if isinstance(value, str) and "://" in value:
            event[key] = _USERINFO.sub(r"\1:***@", value)
    return event


def configure_logging(log_format: str = "json", level: str = "info") -> None:
    numeric_level = logging.getLevelName(level.upper())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _mask_secrets,
    ]
    if log_format == "console":
        renderer: Any = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # aiohttp and asyncio log through the standard library; keep their warnings.
    logging.basicConfig(level=max(numeric_level, logging.WARNING), stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def get_logger(**context: Any) -> Any:
    """Return a logger with ``context`` bound; safe to call at import time.

    The logger is a lazy proxy, so a module-level logger follows the
    configuration that ``configure_logging`` sets later.
    """
    return structlog.get_logger("pantau", **context)
