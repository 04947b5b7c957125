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

Several identical servers (the embedded placement runs one per admitted session): each session's
requests go to the server it used last, which still holds its prompt
(:class:`avatar.infrastructure.llm_affinity.SessionAffinity`); a server that refuses a connection
is passed over and the request goes to another at once, without counting against the breaker.

Health and the breaker agree: a health probe that can connect to no server opens the breaker (the
model is down, so requests would only fail) and one that succeeds closes it, so a recovered server
serves every session at once; :meth:`OpenAIChatModel.recovered` does the same when the supervisor
has restarted an embedded server.
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
from typing import TYPE_CHECKING, Any

import httpx
from circuitbreaker import STATE_OPEN, CircuitBreaker
from prometheus_client import Counter, Gauge, Histogram

from avatar.application.ports.common import ComponentHealth
from avatar.application.ports.llm import (
    ChatErrorKind,
    ChatMessage,
    ChatModel,
    ChatModelError,
    GenerationPause,
)
from avatar.infrastructure.llm_affinity import SessionAffinity
from avatar.settings import LLMSettings, Placement, Settings, default_of
from avatar_common.fairness import FairSlots

if TYPE_CHECKING:
    from avatar.infrastructure.supervisor import SupervisorGroup

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
        base_url: str | Sequence[str],
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
        active_servers: int | None = None,
    ) -> None:
        urls = [base_url] if isinstance(base_url, str) else base_url
        self.servers = SessionAffinity(urls, active=active_servers)
        self.base_url = self.servers.urls[0]
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
        self.servers.recovered()

    async def health(self) -> ComponentHealth:
        """Probe ``GET /models`` of every server; the probe's outcome also moves the breaker (see
        the module doc)."""
        extra: dict[str, object] = {"base_url": self.base_url, "model": self.model}
        if len(self.servers) > 1:
            extra["servers"] = len(self.servers.active)
        process = self._process() if self._process is not None else None
        if process is not None:
            extra["process"] = {"ok": process.ok, "detail": process.detail, **process.extra}
        probes = await asyncio.gather(*(self._probe(url) for url in self.servers.active))
        answered = [p for p in probes if isinstance(p, httpx.Response)]
        if not answered:
            if any(isinstance(p, httpx.ConnectError | httpx.ConnectTimeout) for p in probes):
                _trip(self.breaker)  # nothing listens: a slow or busy server is not tripped
            first = probes[0]
            detail = f"unreachable: {type(first).__name__}"
            if process is not None and not process.ok:
                detail += f"; process {process.detail}"
            return ComponentHealth(self._name, False, detail, self._state(extra))
        status = next((p.status_code for p in answered if p.status_code != 200), 200)
        if status == 200 and not self.breaker.closed:
            self.recovered()
        down = len(probes) - len(answered)
        ok = not down and status == 200 and not self.breaker.opened and (process is None or process.ok)
        if ok:
            detail = "ok"
        elif down:
            detail = f"{down} of {len(probes)} servers unreachable, breaker {self.breaker.state}"
        else:
            detail = f"HTTP {status}, breaker {self.breaker.state}"
        if process is not None and not process.ok:
            detail += f", process {process.detail}"
        return ComponentHealth(self._name, ok, detail, self._state(extra))

    async def _probe(self, base_url: str) -> httpx.Response | httpx.HTTPError:
        url = f"{base_url}/models"
        try:
            try:
                return await self._client.get(url, headers=self._headers(), timeout=2.0)
            except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
                # A pooled connection to a server that has since died; a fresh one tells whether
                # anything listens now.
                return await self._client.get(url, headers=self._headers(), timeout=2.0)
        except httpx.HTTPError as exc:
            return exc

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
            opened = await self._open_with_retries(payload, session)
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

    async def _open_with_retries(self, payload: dict[str, Any], session: uuid.UUID | None) -> _Opened:
        attempt = 0
        reroutes = 0
        while True:
            if self.breaker.opened:
                LLM_ERRORS.labels(ChatErrorKind.CIRCUIT_OPEN.value).inc()
                raise ChatModelError(
                    ChatErrorKind.CIRCUIT_OPEN,
                    f"the chat model failed repeatedly; next try in {max(0, self.breaker.open_remaining)} s",
                )
            outcome: _AttemptError | None = None
            opened: _Opened | None = None
            url = self.servers.url_for(session)
            try:
                opened = await self._open(payload, url)
            except _AttemptError as exc:
                outcome = exc
            if (
                outcome is not None
                and outcome.kind is ChatErrorKind.REFUSED
                and reroutes < len(self.servers) - 1
                and self.servers.refused(url)
            ):
                # Another server holds the same model: go there at once (the one that refused is
                # restarting); the model as a whole has not failed, so the breaker is not told.
                reroutes += 1
                self._count_error(outcome)
                log.info("chat server %s refused the connection; trying another", url)
                continue
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

    async def _open(self, payload: dict[str, Any], base_url: str) -> _Opened:
        response: httpx.Response | None = None
        try:
            async with asyncio.timeout(self._first_token_timeout_s):
                request = self._client.build_request(
                    "POST", f"{base_url}/chat/completions", json=payload, headers=self._headers()
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
                raise _AttemptError(ChatErrorKind.REFUSED, f"cannot connect to {base_url}") from exc
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


def _server_growth(
    group: SupervisorGroup, model: OpenAIChatModel, stack: contextlib.AsyncExitStack
) -> Callable[[], None]:
    """``on_demand`` of the model's servers: start the next embedded server in the background
    (one at a time) and let the model use it once it answers; a server that cannot start is
    logged, and asked for again by the next session that needs it."""
    tasks: set[asyncio.Task[None]] = set()

    async def grow() -> None:
        try:
            if await group.start_next():
                model.servers.activate()
                log.info("embedded LLM server %d of %d started", group.started, len(group.supervisors))
        except Exception as exc:
            log.warning("another embedded LLM server could not start: %s: %s", type(exc).__name__, exc)

    def demand() -> None:
        if not tasks and group.started < len(group.supervisors):
            task = asyncio.get_running_loop().create_task(grow(), name="llm-server-growth")
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def cancel() -> None:
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    stack.push_async_callback(cancel)  # runs before the servers stop (the stack unwinds LIFO)
    return demand


async def build_chat_model(settings: Settings, stack: contextlib.AsyncExitStack) -> ChatModel:
    """The chat model the settings ask for (:func:`build_chat` without the pause)."""
    model, _pause = await build_chat(settings, stack)
    return model


async def build_chat(
    settings: Settings, stack: contextlib.AsyncExitStack
) -> tuple[ChatModel, GenerationPause | None]:
    """The chat model the settings ask for, and what pauses its generation (the embedded servers,
    when ``llm.embedded_yield_to_voice``; ``None`` otherwise).

    ``embedded`` starts llama-cpp-python's server with the packaged SmolLM2 GGUF
    (up to ``settings.embedded_llm_servers()`` of them: the first on ``settings.llm.port``, 0: a
    free port, at start; the others when sessions need them), each under a :class:`Supervisor`
    that restarts it when it dies (and then closes the adapter's breaker), and stops them by PID
    when ``stack`` closes;
    ``remote`` talks to ``settings.llm.base_url`` (vLLM, Groq, any OpenAI-compatible API).
    """
    from avatar.infrastructure.llama_server import LlamaServerChild, ServerPause
    from avatar.infrastructure.supervisor import Supervisor, SupervisorGroup

    cfg = settings.llm
    tokenizer: Callable[[str], int] | None = None
    base_urls: list[str] = [cfg.base_url]
    group: SupervisorGroup | None = None
    pause: GenerationPause | None = None
    slots = cfg.slots
    first_token_timeout_s = cfg.first_token_timeout_s
    if cfg.placement is Placement.EMBEDDED:
        # A session whose prompt its server no longer holds computes it whole again (seconds on a
        # small CPU), and an attempt abandoned for being slow keeps the server busy, so its retry
        # would wait behind it (docs/resilience.md, "Admission").
        first_token_timeout_s = cfg.embedded_first_token_timeout_s
        model_path = embedded_model_path(settings)
        count = settings.embedded_llm_servers()
        children = [
            LlamaServerChild(
                model_path,
                name="llm" if count == 1 else f"llm-{i + 1}",
                port=(cfg.port or None) if i == 0 else None,
                n_ctx=cfg.n_ctx,
                alias=cfg.model,
            )
            for i in range(count)
        ]
        group = SupervisorGroup("llm", [Supervisor(child) for child in children])
        # One server at first; the others start when sessions need them (memory is spent on a
        # server only while it holds a conversation of its own).
        await group.start(1)
        stack.push_async_callback(group.stop)
        base_urls = [child.base_url for child in children]
        tokenizer = await asyncio.to_thread(gguf_tokenizer, model_path)
        # Replies take turns on the CPU: one generates at a time, whichever server holds it.
        slots = slots or 1
        if cfg.embedded_yield_to_voice:
            pause = ServerPause(lambda: [child.pid for child in children])
    model = OpenAIChatModel(
        base_urls,
        cfg.model,
        cfg.api_key.get_secret_value(),
        first_token_timeout_s=first_token_timeout_s,
        max_retries=cfg.max_retries,
        breaker_failures=cfg.breaker_failures,
        breaker_recovery_s=cfg.breaker_recovery_s,
        tokenizer=tokenizer,
        slots=slots,
        queue_timeout_s=cfg.queue_timeout_s,
        process=group.health if group is not None else None,
        active_servers=1 if group is not None else None,
    )
    if group is not None:
        group.on_restart(model.recovered)
        model.servers.on_demand = _server_growth(group, model, stack)
    stack.push_async_callback(model.aclose)
    return model, pause
