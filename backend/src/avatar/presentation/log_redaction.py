"""Keep tokens and signatures out of the server logs (docs/security.md, finding F6).

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
from urllib.parse import parse_qsl, quote

#: Query parameters whose values are safe to log.
SAFE_QUERY_KEYS = frozenset({"v", "limit", "offset", "expires", "mode", "tier", "q_len"})
REDACTED = "[redacted]"
_QUERY = re.compile(r"(?P<path>/[^\s?\"']*)\?(?P<query>[^\s\"']*)")


def _redact_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    if not pairs:
        return REDACTED if query else query
    return "&".join(f"{quote(k, safe='')}={v if k in SAFE_QUERY_KEYS else REDACTED}" for k, v in pairs)


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
