"""A benchmark client that goes through the server's real admission (docs/deploy.md, "Admission";
docs/protocol.md): a session refused with ``BUSY`` waits what the refusal says and asks again,
as a well-behaved client would, instead of the benchmark lifting ``conversation.max_sessions``.

Two refusals are possible: ``POST /api/v1/sessions`` answers 503 ``BUSY`` with ``Retry-After``,
or, when another client took the last live slot between the creation and the connection, the
WebSocket gets an ``error`` ``BUSY`` and closes 4429 with the reason ``busy; retry after N s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import websockets

from avatar.bench import live

#: Close code of a WebSocket refused for want of a live slot (docs/protocol.md).
CLOSE_BUSY = 4429
_RETRY_IN_REASON = re.compile(r"retry after (\d+(?:\.\d+)?) s")
#: The wait when a refusal names none.
DEFAULT_WAIT_S = 1.0


@dataclass(frozen=True, slots=True)
class AdmissionRetry:
    """How long a refused session waits and keeps asking.

    Attributes:
        max_wait_s: Longest single wait, whatever ``Retry-After`` says.
        give_up_s: After this long without admission the session gives up.
    """

    max_wait_s: float = 10.0
    give_up_s: float = 300.0


@dataclass(slots=True)
class Admission:
    """One session's way in: how often it was refused and how long it waited (seconds)."""

    refusals: int = 0
    wait_s: float = 0.0
    admitted: bool = False


class NotAdmittedError(RuntimeError):
    """The server kept refusing the session for the whole ``give_up_s``."""


def retry_after_s(response: httpx.Response) -> float | None:
    """The wait a 503 ``BUSY`` refusal asks for, or ``None`` when ``response`` is not one."""
    if response.status_code != 503:
        return None
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    if code != "BUSY":
        return None
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return DEFAULT_WAIT_S


def close_retry_s(reason: str) -> float | None:
    """The wait named in a 4429 close reason (``busy; retry after N s``), if any."""
    found = _RETRY_IN_REASON.search(reason)
    return float(found.group(1)) if found else None


async def attach(ws_url: str, stack: contextlib.AsyncExitStack) -> live.Client | float:
    """Connect a created session: the client once ``session_state`` arrived (kept open by
    ``stack``), or the seconds to wait when the server has no live slot for it."""
    client = await stack.enter_async_context(live.Client.connect(ws_url))
    try:
        first = await client.until(lambda m: m["type"] in ("session_state", "error"), 120)
    except websockets.ConnectionClosed as exc:
        if exc.rcvd is not None and exc.rcvd.code == CLOSE_BUSY:
            return close_retry_s(exc.rcvd.reason) or DEFAULT_WAIT_S
        raise
    if first["type"] == "session_state":
        return client
    if first.get("code") != "BUSY":
        raise RuntimeError(f"{first.get('code')}: {first.get('message')}")
    try:  # the close that follows the error names the wait
        await client.until(lambda m: False, 30)
    except websockets.ConnectionClosed as exc:
        if exc.rcvd is not None:
            return close_retry_s(exc.rcvd.reason) or DEFAULT_WAIT_S
    return DEFAULT_WAIT_S


async def _try_once(base: str, key: str, stack: contextlib.AsyncExitStack) -> live.Client | float:
    try:
        created = await live.create_session(base, key)
    except httpx.HTTPStatusError as exc:
        wait = retry_after_s(exc.response)
        if wait is None:
            raise
        return wait
    return await attach(created["ws_url"], stack)


@contextlib.asynccontextmanager
async def admitted(
    base: str, key: str, record: Admission, policy: AdmissionRetry | None = None
) -> AsyncIterator[live.Client]:
    """A new session of ``key``'s owner, connected; refusals are waited out and counted in
    ``record``.

    Raises:
        NotAdmittedError: still refused after ``policy.give_up_s``.
    """
    policy = policy or AdmissionRetry()
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        stack = contextlib.AsyncExitStack()
        try:
            outcome = await _try_once(base, key, stack)
        except BaseException:
            await stack.aclose()
            raise
        if isinstance(outcome, live.Client):
            break
        await stack.aclose()
        record.refusals += 1
        left = policy.give_up_s - (loop.time() - start)
        if left <= 0:
            record.wait_s = loop.time() - start
            raise NotAdmittedError(
                f"not admitted after {policy.give_up_s:.0f} s ({record.refusals} refusals)"
            )
        await asyncio.sleep(min(outcome, policy.max_wait_s, left))
    record.wait_s = loop.time() - start
    record.admitted = True
    async with stack:
        yield outcome
