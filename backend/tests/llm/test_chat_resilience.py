"""The chat adapter against a real local HTTP server that fails, hangs, refuses, rate-limits or
returns garbage: retries before the first token, timeouts, error kinds, the circuit breaker."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from prometheus_client import REGISTRY

from avatar.application.ports.llm import ChatErrorKind, ChatMessage, ChatModelError
from avatar.infrastructure.llama_server import free_port
from avatar.infrastructure.llm import OpenAIChatModel, approximate_tokens

MESSAGES = [ChatMessage("user", "hi")]


def _sse(*texts: str, done: bool = True) -> bytes:
    events = [{"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}]
    events += [{"choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}]} for t in texts]
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events)
    return (body + ("data: [DONE]\n\n" if done else "")).encode()


@dataclass
class MisbehavingServer:
    """A raw HTTP/1.1 server; the first path segment picks the behaviour."""

    port: int = 0
    hits: Counter[str] = field(default_factory=Counter)
    switch: str = "fail"
    flaky_left: int = 2

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.decode().split("\r\n"):
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":")[1])
            await reader.readexactly(length)
            mode = head.split(b" ")[1].decode().split("/")[1]
            self.hits[mode] += 1
            if mode == "switch":
                mode = self.switch
            if mode == "flaky":
                mode = "fail" if self.flaky_left > 0 else "ok"
                self.flaky_left -= 1
            await self.respond(mode, reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def respond(self, mode: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def send(status: str, body: bytes, ctype: str = "application/json", extra: str = "") -> None:
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                f"{extra}Connection: close\r\n\r\n".encode()
                + body
            )

        if mode == "ok":
            send("200 OK", _sse("Hel", "lo", "!"), "text/event-stream")
        elif mode == "fail":
            send("500 Internal Server Error", b'{"error": "boom"}')
        elif mode == "badrequest":
            send("400 Bad Request", b'{"error": "context too long"}')
        elif mode == "ratelimit":
            send("429 Too Many Requests", b'{"error": "slow down"}', extra="Retry-After: 0\r\n")
        elif mode == "garbage":
            send("200 OK", b"data: {this is not json\n\n", "text/event-stream")
        elif mode == "html":
            send("200 OK", b"<html>proxy error</html>", "text/html")
        elif mode == "midfail":
            body = _sse("Hello", " there", done=False)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Content-Length: 100000\r\nConnection: close\r\n\r\n" + body
            )
        elif mode == "hang":
            await reader.read()  # say nothing until the client gives up
        await writer.drain()


@pytest.fixture(scope="module")
async def bad_server() -> AsyncIterator[MisbehavingServer]:
    server = MisbehavingServer()
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield server
        listener.close()


def model(server: MisbehavingServer, mode: str, **kw: float) -> OpenAIChatModel:
    opts: dict[str, float] = {
        "first_token_timeout_s": 5.0,
        "max_retries": 3,
        "breaker_failures": 100,
        "backoff_s": 0.01,
    }
    opts.update(kw)
    return OpenAIChatModel(
        f"http://127.0.0.1:{server.port}/{mode}/v1",
        "test-model",
        first_token_timeout_s=opts["first_token_timeout_s"],
        max_retries=int(opts["max_retries"]),
        breaker_failures=int(opts["breaker_failures"]),
        breaker_recovery_s=opts.get("breaker_recovery_s", 30.0),
        backoff_s=opts["backoff_s"],
    )


async def collect(m: OpenAIChatModel) -> list[str]:
    try:
        return [t async for t in m.stream_chat(MESSAGES, max_tokens=8)]
    finally:
        await m.aclose()


def errors(kind: str) -> float:
    return REGISTRY.get_sample_value("llm_errors_total", {"kind": kind}) or 0.0


async def test_streams_tokens_and_records_ttft(bad_server: MisbehavingServer) -> None:
    before = REGISTRY.get_sample_value("llm_ttft_seconds_count") or 0.0
    assert await collect(model(bad_server, "ok")) == ["Hel", "lo", "!"]
    assert REGISTRY.get_sample_value("llm_ttft_seconds_count") == before + 1
    assert REGISTRY.get_sample_value("llm_request_queue_length") == 0


async def test_retries_before_the_first_token_then_succeeds(bad_server: MisbehavingServer) -> None:
    start = bad_server.hits["flaky"]
    assert await collect(model(bad_server, "flaky")) == ["Hel", "lo", "!"]
    assert bad_server.hits["flaky"] - start == 3


@pytest.mark.parametrize(
    ("mode", "kind", "attempts"),
    [
        ("fail", ChatErrorKind.BAD_RESPONSE, 4),
        ("ratelimit", ChatErrorKind.RATE_LIMITED, 4),
        ("garbage", ChatErrorKind.BAD_RESPONSE, 4),
        ("html", ChatErrorKind.BAD_RESPONSE, 4),
        ("badrequest", ChatErrorKind.BAD_RESPONSE, 1),
    ],
)
async def test_failures_are_classified_after_retries(
    bad_server: MisbehavingServer, mode: str, kind: ChatErrorKind, attempts: int
) -> None:
    start, counted = bad_server.hits[mode], errors(kind.value)
    with pytest.raises(ChatModelError) as info:
        await collect(model(bad_server, mode))
    assert info.value.kind is kind and not info.value.partial
    assert bad_server.hits[mode] - start == attempts
    assert errors(kind.value) == counted + attempts


async def test_no_first_token_in_time_is_a_timeout(bad_server: MisbehavingServer) -> None:
    start = bad_server.hits["hang"]
    with pytest.raises(ChatModelError) as info:
        await collect(model(bad_server, "hang", first_token_timeout_s=0.3, max_retries=1))
    assert info.value.kind is ChatErrorKind.TIMEOUT
    assert bad_server.hits["hang"] - start == 2


async def test_closed_port_is_refused() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    m = OpenAIChatModel(url, "x", max_retries=1, backoff_s=0.01)
    with pytest.raises(ChatModelError) as info:
        await collect(m)
    assert info.value.kind is ChatErrorKind.REFUSED


async def test_health_and_breaker_agree(bad_server: MisbehavingServer) -> None:
    """A probe that cannot connect opens the breaker (requests fail fast, no fallback delay);
    one that reaches the server again closes it, so every session is served at once."""
    down = OpenAIChatModel(f"http://127.0.0.1:{free_port()}/v1", "x", max_retries=1, backoff_s=0.01)
    health = await down.health()
    assert not health.ok and health.extra["breaker"] == "open" and down.breaker.opened
    with pytest.raises(ChatModelError) as info:
        await collect(down)
    assert info.value.kind is ChatErrorKind.CIRCUIT_OPEN
    # a server that failed until the breaker opened answers again: the next probe closes it
    bad_server.switch = "fail"
    up = model(bad_server, "switch", breaker_failures=2, max_retries=1, breaker_recovery_s=300.0)
    with pytest.raises(ChatModelError):
        [t async for t in up.stream_chat(MESSAGES)]
    assert up.breaker.opened
    bad_server.switch = "ok"
    health = await up.health()
    assert health.ok and health.extra["breaker"] == "closed"
    assert await collect(up) == ["Hel", "lo", "!"]
    await down.aclose()


async def test_failure_after_the_first_token_is_partial_not_retried(bad_server: MisbehavingServer) -> None:
    m = model(bad_server, "midfail")
    got: list[str] = []
    start = bad_server.hits["midfail"]
    with pytest.raises(ChatModelError) as info:
        async for token in m.stream_chat(MESSAGES):
            got.append(token)
    await m.aclose()
    assert got == ["Hello", " there"]
    assert info.value.partial and info.value.kind is ChatErrorKind.BAD_RESPONSE
    assert bad_server.hits["midfail"] - start == 1


async def test_circuit_breaker_opens_then_recovers(bad_server: MisbehavingServer) -> None:
    bad_server.switch = "fail"
    m = model(bad_server, "switch", breaker_failures=5, breaker_recovery_s=0.5)
    start = bad_server.hits["switch"]
    for _ in range(2):  # 4 attempts, then the 5th failure opens the circuit
        with pytest.raises(ChatModelError):
            [t async for t in m.stream_chat(MESSAGES)]
    assert bad_server.hits["switch"] - start == 5
    with pytest.raises(ChatModelError) as info:
        [t async for t in m.stream_chat(MESSAGES)]
    assert info.value.kind is ChatErrorKind.CIRCUIT_OPEN
    assert bad_server.hits["switch"] - start == 5  # refused without touching the server
    bad_server.switch = "ok"
    await asyncio.sleep(max(0.0, m.breaker.open_remaining) + 0.05)  # wait out the recovery time
    assert not m.breaker.opened
    assert [t async for t in m.stream_chat(MESSAGES)] == ["Hel", "lo", "!"]  # the half-open probe
    assert m.breaker.closed
    await m.aclose()


def test_token_approximation_errs_high_for_cjk() -> None:
    assert approximate_tokens("") == 0
    assert approximate_tokens("hello world") == 4
    assert approximate_tokens("안녕하세요") == 5
