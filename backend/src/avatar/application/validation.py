"""Limits on what clients may send, shared by the WebSocket protocol and the REST API.

Every number a client sends is finite and bounded, every string is free of NUL characters and
unpaired surrogates (PostgreSQL cannot store either) and has a length limit, JSON is parsed
strictly (no ``NaN``/``Infinity``, no overflowing literals, bounded depth) and free-form metadata
has a size limit. The limits are documented in docs/protocol.md (Limits).
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field

#: Deepest nesting of arrays/objects accepted in any JSON a client sends.
MAX_JSON_DEPTH = 32
#: Largest JSON request body of the REST API (uploads are multipart and have their own limits).
MAX_JSON_BODY_BYTES = 256 * 1024
#: Largest ``metadata`` of a session, as compact JSON.
MAX_METADATA_BYTES = 16 * 1024
#: Deepest nesting inside a session's ``metadata``.
MAX_METADATA_DEPTH = 8
#: Longest integer literal (digits) accepted in JSON; Python refuses beyond 4300 anyway.
MAX_INT_DIGITS = 32
#: Largest absolute value of a client timestamp or duration in milliseconds: wall-clock epoch
#: milliseconds (the web app pings with `Date.now()`, ~1.8e12) fit until about the year 2128.
MAX_MS = 5e12
#: Longest voice name in ``set_tts_mode``.
MAX_VOICE_CHARS = 100

_FORBIDDEN = re.compile("[\x00\ud800-\udfff]")


class JsonInputError(ValueError):
    """Client JSON that is malformed or outside the limits; the message says which."""


def _no_nul(value: str) -> str:
    if _FORBIDDEN.search(value):
        raise ValueError("must not contain NUL characters or unpaired surrogates")
    return value


#: A client string: no NUL, no unpaired surrogate (combine with ``Field(max_length=...)``).
SafeStr = Annotated[str, AfterValidator(_no_nul)]
#: A client number of milliseconds: finite and within +-:data:`MAX_MS`.
Millis = Annotated[float, Field(allow_inf_nan=False, ge=-MAX_MS, le=MAX_MS)]
#: A non-negative client duration in milliseconds.
Duration = Annotated[float, Field(allow_inf_nan=False, ge=0, le=MAX_MS)]


def sanitize_text(value: str) -> str:
    """``value`` without NUL characters and unpaired surrogates (for text headed to storage that a
    model or recognizer produced, where rejecting is not an option)."""
    return _FORBIDDEN.sub("", value) if _FORBIDDEN.search(value) else value


def _constant(name: str) -> Any:
    raise JsonInputError(f"{name} is not a JSON number; numbers must be finite")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonInputError(f"the number {text[:20]} is out of range")
    return value


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise JsonInputError(f"an integer of {len(text)} digits is out of range")
    return int(text)


def depth(value: object, limit: int) -> int:
    """How deeply ``value`` nests lists/dicts, counting up to ``limit + 1`` at most."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: list[object] = list(item.values())
        elif isinstance(item, list):
            children = list(item)
        else:
            continue
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def _bracket_depth_exceeds(text: str, limit: int) -> bool:
    """Cheap pre-check: more opening brackets in a row than ``limit`` (outside strings)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    level = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            level += 1
            if level > limit:
                return True
        elif char in "]}":
            level -= 1
    return False


def strict_json_loads(text: str | bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse client JSON strictly.

    Raises:
        JsonInputError: not JSON, a ``NaN``/``Infinity`` constant, a number out of range, or
            nesting deeper than ``max_depth``.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonInputError("the body is not UTF-8") from exc
    if _bracket_depth_exceeds(text, max_depth):
        raise JsonInputError(f"the JSON nests deeper than {max_depth} levels")
    try:
        return json.loads(text, parse_constant=_constant, parse_float=_float, parse_int=_int)
    except JsonInputError:
        raise
    except json.JSONDecodeError as exc:
        raise JsonInputError(f"not valid JSON: {exc.msg} at position {exc.pos}") from exc
    except (ValueError, RecursionError) as exc:
        raise JsonInputError("not valid JSON") from exc


def check_metadata(value: dict[str, Any]) -> dict[str, Any]:
    """Session metadata within the limits: no NUL/surrogates in keys or strings, depth and size.

    Raises:
        ValueError: with a message naming the limit.
    """
    if depth(value, MAX_METADATA_DEPTH) > MAX_METADATA_DEPTH:
        raise ValueError(f"metadata nests deeper than {MAX_METADATA_DEPTH} levels")
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                _no_nul(str(key))
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            _no_nul(item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError("metadata numbers must be finite")
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "replace"))
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}")
    return value
