"""The one retry helper of the adapters: transient failures are retried with exponential backoff,
anything else is raised at once, and a failure that outlasts the retries becomes a
:class:`DependencyError` that says how many attempts were made.

Each adapter decides what is transient for its own dependency (``is_transient``); the callers
above the adapters (use cases, the conversation's background writer) never retry again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from avatar.domain.errors import DependencyError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``retries`` further attempts after the first, sleeping ``base_delay_s * 2**n`` (capped) between."""

    retries: int = 3
    base_delay_s: float = 0.1
    max_delay_s: float = 2.0

    def delay(self, attempt: int) -> float:
        """The pause after failed attempt number ``attempt`` (0 = the first)."""
        return float(min(self.max_delay_s, self.base_delay_s * (2**attempt)))


async def call_with_retries(
    step: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    is_transient: Callable[[BaseException], bool],
    what: str,
    dependency: str,
    log: logging.Logger,
) -> T:
    """Run ``step`` until it succeeds, fails permanently, or ``policy.retries`` retries are spent.

    Args:
        step: One attempt; it must leave things ready for the next attempt when it raises.
        policy: How many retries and how long to wait between them.
        is_transient: Whether an exception may go away on another attempt.
        what: What is being done, for messages ("write", "put raw_inputs/...").
        dependency: The dependency's name, for messages ("database", "object store").
        log: Where each retry (warning) and the final failure (error) is logged.

    Raises:
        DependencyError: a transient failure lasted through every attempt.
        Exception: the first non-transient failure, unchanged.
    """

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "%s %s failed (%s: %s); retry %d/%d in %.2fs",
            dependency,
            what,
            type(exc).__name__,
            exc,
            state.attempt_number,
            policy.retries,
            state.upcoming_sleep,
        )

    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.retries + 1),
        wait=wait_exponential(multiplier=policy.base_delay_s, max=policy.max_delay_s),
        retry=retry_if_exception(is_transient),
        before_sleep=before_sleep,
    )
    try:
        return await retrying(step)
    except RetryError as exc:
        last = exc.last_attempt.exception()
        attempts = exc.last_attempt.attempt_number
        log.error("%s %s failed after %d attempts: %s", dependency, what, attempts, last)
        raise DependencyError(
            f"{dependency} unavailable: {what} failed after {attempts} attempts "
            f"({type(last).__name__}: {last})"
        ) from last
