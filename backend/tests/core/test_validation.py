"""The input limits of ``avatar.application.validation`` (docs/protocol.md, Limits and errors)."""

from __future__ import annotations

import json

import pytest

from avatar.application.validation import (
    MAX_JSON_DEPTH,
    MAX_METADATA_BYTES,
    JsonInputError,
    check_metadata,
    depth,
    sanitize_text,
    strict_json_loads,
)


@pytest.mark.parametrize(
    "text",
    [
        "NaN",
        '{"t": Infinity}',
        "[-Infinity]",
        "1e400",
        "-1e400",
        "9" * 33,
        "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1),
        "[" * 100_000,
        '{"a":' * 100_000,
        "{bad",
        "",
        b'{"a":"\xff"}',
    ],
)
def test_strict_json_refuses(text: str | bytes) -> None:
    with pytest.raises(JsonInputError) as refused:
        strict_json_loads(text)
    assert str(refused.value) and len(str(refused.value)) < 200


def test_strict_json_accepts_ordinary_json_and_brackets_inside_strings() -> None:
    deep_in_string = json.dumps({"text": "[" * 1000, "n": [1.5, -2, 1e300, 10**31]})
    assert strict_json_loads(deep_in_string)["text"] == "[" * 1000
    nested = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert depth(strict_json_loads(nested), MAX_JSON_DEPTH) == MAX_JSON_DEPTH
    assert strict_json_loads(b'{"a": "\\u00e9"}') == {"a": "\u00e9"}


def test_metadata_limits() -> None:
    assert check_metadata({"a": [1, {"b": "c"}]}) == {"a": [1, {"b": "c"}]}
    for bad in (
        {"a": "x\x00"},
        {"a\x00": 1},
        {"a": ["\ud800"]},
        {"a": float("nan")},
        {"a": "x" * (MAX_METADATA_BYTES + 1)},
        {"a": {"a": {"a": {"a": {"a": {"a": {"a": {"a": {"a": 1}}}}}}}}},
    ):
        with pytest.raises(ValueError):
            check_metadata(bad)


def test_sanitize_text_drops_only_what_storage_cannot_hold() -> None:
    assert sanitize_text("hello\x00 there\ud800!") == "hello there!"
    assert sanitize_text("ordinary text, é, 한국어 \U0001f600") == "ordinary text, é, 한국어 \U0001f600"


def test_wall_clock_milliseconds_are_valid_client_times() -> None:
    # The web app's heartbeat sends `{"type": "ping", "t": Date.now()}` (epoch ms, ~1.8e12 today):
    # it must be answered, not refused; 1e13 (year 2286) stays out of bounds.
    import time

    from avatar.application.conversation.events import CLIENT_MESSAGE, PingIn

    now_ms = time.time() * 1000.0
    ping = CLIENT_MESSAGE.validate_python({"type": "ping", "t": now_ms})
    assert isinstance(ping, PingIn) and ping.t == now_ms
    with pytest.raises(ValueError):
        CLIENT_MESSAGE.validate_python({"type": "ping", "t": 1e13})
