"""Keep tokens and signatures out of the server logs (docs/security.md, finding F1).

Uvicorn logs every request line and every WebSocket handshake with its query string, which held
session tokens (``/ws/{id}?token=...``) and presigned-URL signatures (``?sig=...``). The filter
here rewrites every query value except a short list of harmless parameters to ``[redacted]``
before a record is formatted; :func:`uvicorn_log_config` installs it on uvicorn's handlers.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

#: Query parameters whose values are safe to log.
SAFE_QUERY_KEYS = frozenset({"v", "limit", "offset", "expires", "mode", "tier", "q_len"})
REDACTED = "[redacted]"
_QUERY = re.compile(r"(?P<path>/[^\s?\"']*)\?(?P<query>[^\s\"']*)")


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,40}")


def _redact_query(query: str) -> str:
    """Each ``name=value``: the value kept only for safe names; anything not of that shape hidden."""
    parts = []
    for part in query.split("&"):
        name, eq, value = part.partition("=")
        if not eq or not _NAME.fullmatch(name):
            parts.append(REDACTED)  # a bare value (``?TOKEN``) may itself be the secret
        else:
            parts.append(f"{name}={value if name in SAFE_QUERY_KEYS else REDACTED}")
    return "&".join(parts)


def redact_urls(text: str) -> str:
    """``text`` with the values of every URL query parameter outside the safe list replaced."""
    if "?" not in text:
        return text
    return _QUERY.sub(lambda m: f"{m['path']}?{_redact_query(m['query'])}", text)


def _redact(value: Any) -> Any:
    return redact_urls(value) if isinstance(value, str) else value


class RedactQueryFilter(logging.Filter):
    """A handler filter that redacts query strings in a record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_urls(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact(v) for k, v in record.args.items()}
        return True


def uvicorn_log_config() -> dict[str, Any]:
    """Uvicorn's default logging configuration with :class:`RedactQueryFilter` on every handler."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_query"] = {"()": f"{__name__}.RedactQueryFilter"}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact_query")
    return config
