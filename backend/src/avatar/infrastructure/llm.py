"""OpenAI-compatible streaming chat adapter (vLLM, llama.cpp server, Groq, hosted APIs).

Resilience: each attempt must produce its first token within ``first_token_timeout_s``; up to
``max_retries`` retries happen before the first token only (a retry after text was streamed would
repeat words the listener already heard); every failed attempt counts towards a circuit breaker
that opens after ``breaker_failures`` failures and lets one probe through after
``breaker_recovery_s``. Failures are classified (timeout, refused, rate_limited, bad_response).

Concurrency: at most ``slots`` requests are sent at once (the embedded llama.cpp server generates
one reply at a time); the others wait in :class:`avatar_common.fairness.FairSlots` keyed by
session: round-robin between sessions, first come first served within one, and one request of a
session at the model at once (a session's summary waits behind its reply, never beside it). A
request waits at most ``queue_timeout_s`` and then fails as ``busy``, which is not a failure of
the model and does not count towards the breaker. The first-token timeout starts once a request
has its slot (docs/architecture.md, "Many sessions on one box").

Health and the breaker agree: a health probe that cannot connect opens the breaker (the server is
down, so requests would only fail) and one that succeeds closes it, so a recovered server serves
every session at once; :meth:`OpenAIChatModel.recovered` does the same when the supervisor has
restarted the embedded server.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
from circuitbreaker import STATE_OPEN, CircuitBreaker
from prometheus_client import Counter, Gauge, Histogram

from avatar.application.ports.common import ComponentHealth
from avatar.application.ports.llm import ChatErrorKind, ChatMessage, ChatModel, ChatModelError
from avatar.settings import LLMSettings, Placement, Settings, default_of
from avatar_common.fairness import FairSlots

log = logging.getLogger(__name__)

LLM_TTFT = Histogram(
    "llm_ttft_seconds",
    "Time from a chat request to its first streamed token (retries included)",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0),
)
LLM_TOKENS_PER_SECOND = Histogram(
    "llm_tokens_per_second",
    "Streaming speed of a reply after its first token",
    buckets=(5, 10, 20, 40, 60, 80, 100, 150, 200, 300, 500),
)
LLM_QUEUE = Gauge("llm_request_queue_length", "Chat requests waiting for their first token")
LLM_ERRORS = Counter("llm_errors_total", "Failed chat attempts by kind", ["kind"])
for _kind in ChatErrorKind:  # every kind is exported from the start (0), so its panel has a series
    LLM_ERRORS.labels(_kind.value)
LLM_SLOT_WAIT = Histogram(
    "llm_slot_wait_seconds",
    "Time a chat request waited for a free model slot",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0),
)

_MAX_RETRY_AFTER_S = 2.0


class _AttemptError(ChatModelError):
    """One failed attempt; says whether another attempt could help."""

    def __init__(
        self,
        kind: ChatErrorKind,
        message: str,
        *,
        retryable: bool = True,
        retry_after: float | None = None,
        partial: bool = False,
    ) -> None:
        super().__init__(kind, message, partial=partial)
        self.retryable = retryable
        self.retry_after = retry_after


def _status_error(status: int, body: bytes, headers: httpx.Headers) -> _AttemptError:
    snippet = body[:200].decode("utf-8", "replace").strip()
    if status == 429:
        retry_after = None
        with contextlib.suppress(TypeError, ValueError):
            retry_after = float(headers.get("retry-after", ""))
        return _AttemptError(
            ChatErrorKind.RATE_LIMITED,
            f"the chat model is rate limited (429): {snippet}",
            retry_after=retry_after,
        )
    # A 4xx other than 429 (bad key, unknown model, prompt too long) will fail the same way again.
    return _AttemptError(
        ChatErrorKind.BAD_RESPONSE,
        f"the chat model answered HTTP {status}: {snippet}",
        retryable=status >= 500,
    )


def _parse_event(line: str) -> tuple[str | None, bool]:
    """One server-sent-events line -> (content delta or None, stream finished)."""
    line = line.strip()
    if not line or line.startswith(":") or line.startswith(("event:", "id:", "retry:")):
        return None, False
    if not line.startswith("data:"):
        raise _AttemptError(ChatErrorKind.BAD_RESPONSE, f"not a server-sent event: {line[:80]!r}")
    data = line[5:].strip()
    if data == "[DONE]":
        return None, True
    try:
        event = json.loads(data)
    except json.JSONDecodeError as exc:
        raise _AttemptError(ChatErrorKind.BAD_RESPONSE, f"undecodable stream event: {data[:80]!r}") from exc
    if not isinstance(event, dict):
        raise _AttemptError(ChatErrorKind.BAD_RESPONSE, "stream event is not an object")
    if "error" in event:
        reported = str(event["error"])[:200]
        raise _AttemptError(ChatErrorKind.BAD_RESPONSE, f"the chat model reported: {reported}")
    choices = event.get("choices")
    if not isinstance(choices, list):
        raise _AttemptError(ChatErrorKind.BAD_RESPONSE, "stream event without choices")
    if not choices:
        return None, False  # e.g. a trailing usage-only event
    delta = choices[0].get("delta") if isinstance(choices[0], dict) else None
    if not isinstance(delta, dict):
        raise _AttemptError(ChatErrorKind.BAD_RESPONSE, "stream event without a delta")
    # ``reasoning_content`` (thinking) is deliberately ignored: it must never be spoken.
    content = delta.get("content")
    if content is not None and not isinstance(content, str):
        raise _AttemptError(ChatErrorKind.BAD_RESPONSE, "stream delta content is not text")
    return content or None, False


def approximate_tokens(text: str) -> int:
    """Documented approximation when no tokenizer is at hand: ~3.5 ASCII characters per token,
    one token per other character (CJK and Hangul often cost a token or more per character), so
    the count errs on the high side and a prompt built from it stays inside the context."""
    if not text:
        return 0
    ascii_chars = sum(1 for ch in text if ch.isascii())
    return max(1, math.ceil(ascii_chars / 3.5) + (len(text) - ascii_chars))


def _trip(breaker: CircuitBreaker) -> None:
    """Open ``breaker`` now: a health probe saw the server down (the library has no public call)."""
    if not breaker.opened:
        breaker._state = STATE_OPEN
        breaker._opened = time.monotonic()


class _Opened:
    """A response whose first token has arrived."""

    def __init__(self, response: httpx.Response, lines: AsyncIterator[str], first: str, done: bool) -> None:
        self.response = response
        self.lines = lines
        self.first = first
        self.done = done


class OpenAIChatModel:
    """Streams ``/chat/completions`` of any OpenAI-compatible server over httpx.

    Satisfies :class:`avatar.application.ports.llm.ChatModel`.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str = "",
        *,
        first_token_timeout_s: float = default_of(LLMSettings, "first_token_timeout_s"),
        max_retries: int = default_of(LLMSettings, "max_retries"),
        breaker_failures: int = default_of(LLMSettings, "breaker_failures"),
        breaker_recovery_s: float = default_of(LLMSettings, "breaker_recovery_s"),
        stream_timeout_s: float = 30.0,
        backoff_s: float = 0.25,
        tokenizer: Callable[[str], int] | None = None,
        name: str = "llm",
        slots: int = 0,
        queue_timeout_s: float = default_of(LLMSettings, "queue_timeout_s"),
        process: Callable[[], ComponentHealth] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._api_key = api_key
        self._first_token_timeout_s = first_token_timeout_s
        self._max_retries = max_retries
        self._backoff_s = backoff_s
        self._name = name
        self.slots = FairSlots(slots, per_key=1)
        self._queue_timeout_s = queue_timeout_s
        self._process = process
        self.breaker = CircuitBreaker(
            failure_threshold=breaker_failures,
            recovery_timeout=breaker_recovery_s,
            expected_exception=ChatModelError,
            name=f"{name}-{id(self):x}",
        )
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(stream_timeout_s, connect=first_token_timeout_s),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=8),
        )
        self._count: Callable[[str], int] = functools.lru_cache(maxsize=4096)(tokenizer or approximate_tokens)
        self.exact_tokens = tokenizer is not None

    def count_tokens(self, text: str) -> int:
        return self._count(text)

    async def aclose(self) -> None:
        await self._client.aclose()

    def recovered(self) -> None:
        """The server is known to be back (e.g. restarted by its supervisor): close the breaker
        so every session is served again at once, without waiting out ``breaker_recovery_s``."""
        if not self.breaker.closed:
            log.info("chat model %s is back; closing its circuit breaker", self.base_url)
        self.breaker.reset()

    async def health(self) -> ComponentHealth:
        """Probe ``GET /models``; the probe's outcome also moves the breaker (see the module doc)."""
        extra: dict[str, object] = {"base_url": self.base_url, "model": self.model}
        process = self._process() if self._process is not None else None
        if process is not None:
            extra["process"] = {"ok": process.ok, "detail": process.detail, **process.extra}
        try:
            response = await self._probe()
        except httpx.HTTPError as exc:
            if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                _trip(self.breaker)  # nothing listens: a slow or busy server is not tripped
            detail = f"unreachable: {type(exc).__name__}"
            if process is not None and not process.ok:
                detail += f"; process {process.detail}"
            return ComponentHealth(self._name, False, detail, self._state(extra))
        if response.status_code == 200 and not self.breaker.closed:
            self.recovered()
        ok = response.status_code == 200 and not self.breaker.opened and (process is None or process.ok)
        detail = "ok" if ok else f"HTTP {response.status_code}, breaker {self.breaker.state}"
        if process is not None and not process.ok:
            detail += f", process {process.detail}"
        return ComponentHealth(self._name, ok, detail, self._state(extra))

    async def _probe(self) -> httpx.Response:
        url = f"{self.base_url}/models"
        try:
            return await self._client.get(url, headers=self._headers(), timeout=2.0)
        except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
            # A pooled connection to a server that has since died; a fresh one tells whether
            # anything listens now.
            return await self._client.get(url, headers=self._headers(), timeout=2.0)

    def _state(self, extra: dict[str, object]) -> dict[str, object]:
        return {
            **extra,
            "breaker": str(self.breaker.state),
            "slots": self.slots.size,
            "slots_in_use": self.slots.in_use,
            "waiting": self.slots.waiting,
        }

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    async def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        session: uuid.UUID | None = None,
    ) -> AsyncIterator[str]:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
        }
        if max_tokens is not None:
            payload["max_tokens"] = max_tokens
        if temperature is not None:
            payload["temperature"] = temperature
        started = time.perf_counter()
        LLM_QUEUE.inc()
        waiting = True
        opened: _Opened | None = None
        slot = False
        try:
            slot = await self.slots.acquire(self._queue_timeout_s, session)
            LLM_SLOT_WAIT.observe(time.perf_counter() - started)
            if not slot:
                LLM_ERRORS.labels(ChatErrorKind.BUSY.value).inc()
                raise ChatModelError(
                    ChatErrorKind.BUSY,
                    f"all {self.slots.size} slot(s) of the chat model stayed busy for "
                    f"{self._queue_timeout_s:g} s; try again in a moment",
                )
            opened = await self._open_with_retries(payload)
            LLM_QUEUE.dec()
            waiting = False
            first_at = time.perf_counter()
            LLM_TTFT.observe(first_at - started)
            tokens = 0
            if opened.first:
                tokens += 1
                yield opened.first
            finished = opened.done
            while not finished:
                try:
                    line = await anext(opened.lines)
                except StopAsyncIteration:
                    break
                except httpx.TimeoutException as exc:
                    stalled = _AttemptError(
                        ChatErrorKind.TIMEOUT, "the chat model stalled mid-reply", partial=True
                    )
                    raise self._count_error(stalled) from exc
                except httpx.HTTPError as exc:
                    broke = _AttemptError(
                        ChatErrorKind.BAD_RESPONSE,
                        f"the reply stream broke: {type(exc).__name__}",
                        partial=True,
                    )
                    raise self._count_error(broke) from exc
                try:
                    text, finished = _parse_event(line)
                except _AttemptError as exc:
                    exc.partial = True
                    raise self._count_error(exc) from None
                if text:
                    tokens += 1
                    yield text
            elapsed = time.perf_counter() - first_at
            if tokens > 1 and elapsed > 0:
                LLM_TOKENS_PER_SECOND.observe((tokens - 1) / elapsed)
        finally:
            if waiting:
                LLM_QUEUE.dec()
            try:
                if opened is not None:
                    await opened.response.aclose()
            finally:
                if slot:
                    self.slots.release(session)

    def _count_error(self, exc: _AttemptError) -> _AttemptError:
        LLM_ERRORS.labels(exc.kind.value).inc()
        return exc

    async def _open_with_retries(self, payload: dict[str, Any]) -> _Opened:
        attempt = 0
        while True:
            if self.breaker.opened:
                LLM_ERRORS.labels(ChatErrorKind.CIRCUIT_OPEN.value).inc()
                raise ChatModelError(
                    ChatErrorKind.CIRCUIT_OPEN,
                    f"the chat model failed repeatedly; next try in {max(0, self.breaker.open_remaining)} s",
                )
            outcome: _AttemptError | None = None
            opened: _Opened | None = None
            try:
                opened = await self._open(payload)
            except _AttemptError as exc:
                outcome = exc
            try:
                # The breaker sees only the attempt's outcome, never a cancellation (barge-in).
                with self.breaker:
                    if outcome is not None:
                        raise outcome
            except _AttemptError as exc:
                self._count_error(exc)
                if attempt >= self._max_retries or not exc.retryable or self.breaker.opened:
                    raise
                delay = exc.retry_after if exc.retry_after is not None else self._backoff_s * 2**attempt
                attempt += 1
                log.info("chat attempt %d failed (%s); retrying", attempt, exc.kind)
                await asyncio.sleep(min(delay, _MAX_RETRY_AFTER_S))
                continue
            assert opened is not None
            return opened

    async def _open(self, payload: dict[str, Any]) -> _Opened:
        response: httpx.Response | None = None
        try:
            async with asyncio.timeout(self._first_token_timeout_s):
                request = self._client.build_request(
                    "POST", f"{self.base_url}/chat/completions", json=payload, headers=self._headers()
                )
                response = await self._client.send(request, stream=True)
                if response.status_code != 200:
                    raise _status_error(response.status_code, await response.aread(), response.headers)
                ctype = response.headers.get("content-type", "")
                if "text/event-stream" not in ctype:
                    body = (await response.aread())[:80]
                    got = ctype or "no content type"
                    raise _AttemptError(
                        ChatErrorKind.BAD_RESPONSE, f"expected an event stream, got {got}: {body!r}"
                    )
                lines = response.aiter_lines()
                async for line in lines:
                    text, finished = _parse_event(line)
                    if text or finished:
                        return _Opened(response, lines, text or "", finished)
                raise _AttemptError(ChatErrorKind.BAD_RESPONSE, "the stream ended before any token")
        except BaseException as exc:
            if response is not None:
                await response.aclose()
            if isinstance(exc, _AttemptError):
                raise
            connect_failed = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
            if isinstance(exc, TimeoutError | httpx.TimeoutException) and not connect_failed:
                raise _AttemptError(
                    ChatErrorKind.TIMEOUT, f"no first token within {self._first_token_timeout_s:g} s"
                ) from exc
            if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                raise _AttemptError(ChatErrorKind.REFUSED, f"cannot connect to {self.base_url}") from exc
            if isinstance(exc, httpx.HTTPError):
                raise _AttemptError(
                    ChatErrorKind.BAD_RESPONSE, f"broken response: {type(exc).__name__}: {exc}"
                ) from exc
            raise


def gguf_tokenizer(model_path: Path) -> Callable[[str], int]:
    """Exact token counts with the GGUF model's own vocabulary (loads the vocabulary only)."""
    from llama_cpp import Llama

    vocab = Llama(model_path=str(model_path), vocab_only=True, verbose=False)

    def count(text: str) -> int:
        return len(vocab.tokenize(text.encode("utf-8"), add_bos=False, special=True)) if text else 0

    return count


def embedded_model_path(settings: Settings) -> Path:
    """The GGUF to serve, checked against the model manifests first (docs/security.md)."""
    from avatar.infrastructure.models import check_model_path, model_manifest

    if settings.llm.gguf_path is not None:
        check_model_path(settings, settings.llm.gguf_path)
        return settings.llm.gguf_path
    return model_manifest(settings).path("smollm2-135m-instruct")


async def build_chat_model(settings: Settings, stack: contextlib.AsyncExitStack) -> ChatModel:
    """The chat model the settings ask for.

    ``embedded`` starts llama-cpp-python's server with the packaged SmolLM2 GGUF on
    ``settings.llm.port`` (0: a free port) under a :class:`Supervisor` that restarts it when it
    dies (and then closes the adapter's breaker), and stops it by PID when ``stack`` closes;
    ``remote`` talks to ``settings.llm.base_url`` (vLLM, Groq, any OpenAI-compatible API).
    """
    from avatar.infrastructure.llama_server import LlamaServerChild
    from avatar.infrastructure.supervisor import Supervisor

    cfg = settings.llm
    tokenizer: Callable[[str], int] | None = None
    base_url = cfg.base_url
    supervisor: Supervisor | None = None
    slots = cfg.slots
    first_token_timeout_s = cfg.first_token_timeout_s
    if cfg.placement is Placement.EMBEDDED:
        # One slot serves every session: a request whose session was not served last computes its
        # whole prompt again (seconds on a small CPU), and an attempt abandoned for being slow keeps
        # the server busy, so its retry would wait behind it (docs/resilience.md, "Admission").
        first_token_timeout_s = cfg.embedded_first_token_timeout_s
        model_path = embedded_model_path(settings)
        child = LlamaServerChild(model_path, port=cfg.port or None, n_ctx=cfg.n_ctx, alias=cfg.model)
        supervisor = Supervisor(child)
        await supervisor.start()
        stack.push_async_callback(supervisor.stop)
        base_url = child.base_url
        tokenizer = await asyncio.to_thread(gguf_tokenizer, model_path)
        slots = slots or 1
    model = OpenAIChatModel(
        base_url,
        cfg.model,
        cfg.api_key.get_secret_value(),
        first_token_timeout_s=first_token_timeout_s,
        max_retries=cfg.max_retries,
        breaker_failures=cfg.breaker_failures,
        breaker_recovery_s=cfg.breaker_recovery_s,
        tokenizer=tokenizer,
        slots=slots,
        queue_timeout_s=cfg.queue_timeout_s,
        process=supervisor.health if supervisor is not None else None,
    )
    if supervisor is not None:
        supervisor.on_restart(model.recovered)
    stack.push_async_callback(model.aclose)
    return model
