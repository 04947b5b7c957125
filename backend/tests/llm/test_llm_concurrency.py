"""Several sessions asking the real llama.cpp server (SmolLM2-135M) at the same moment: every one
gets a real model reply, waiting its turn first come first served; a request that cannot get a slot
in time fails as ``busy`` (code ``BUSY``), never as a cancelled or empty reply. The slots themselves
are tested in ``services/common/tests/test_fairness.py``."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import REGISTRY

from avatar.application.ports.llm import ChatErrorKind, ChatMessage, ChatModelError
from avatar.infrastructure.llm import OpenAIChatModel

pytestmark = pytest.mark.slow


def ask(n: int) -> list[ChatMessage]:
    return [ChatMessage("user", f"Count from {n} to {n + 5} in words.")]


async def reply(model: OpenAIChatModel, n: int) -> tuple[list[str], float, float]:
    started = time.perf_counter()
    tokens = [t async for t in model.stream_chat(ask(n), max_tokens=24, temperature=0.0)]
    return tokens, started, time.perf_counter()


@pytest.mark.parametrize("sessions", [2, 3, 4])
async def test_concurrent_requests_all_get_real_replies(llama_server: str, sessions: int) -> None:
    model = OpenAIChatModel(llama_server, "smollm2-135m-instruct", slots=1, queue_timeout_s=60.0)
    try:
        results = await asyncio.gather(*(reply(model, n) for n in range(sessions)))
    finally:
        await model.aclose()
    for tokens, _, _ in results:
        # a real reply: several streamed tokens (an interrupted one ends after its first event)
        assert len(tokens) > 3 and "".join(tokens).strip()
    assert model.breaker.closed and model.slots.in_use == 0 and model.slots.waiting == 0


async def test_the_server_itself_no_longer_interrupts_a_reply_in_flight(llama_server: str) -> None:
    """Without client-side slots, both requests reach the server at once: it queues the second
    instead of ending the first (llama-cpp-python's default ``interrupt_requests``)."""
    model = OpenAIChatModel(llama_server, "smollm2-135m-instruct", first_token_timeout_s=60.0)
    try:
        results = await asyncio.gather(reply(model, 1), reply(model, 7))
    finally:
        await model.aclose()
    assert all(len(tokens) > 3 for tokens, _, _ in results)


async def test_a_request_that_gets_no_slot_in_time_is_busy(llama_server: str) -> None:
    model = OpenAIChatModel(llama_server, "smollm2-135m-instruct", slots=1, queue_timeout_s=0.05)
    before = REGISTRY.get_sample_value("llm_errors_total", {"kind": "busy"}) or 0.0
    try:
        outcomes = await asyncio.gather(reply(model, 1), reply(model, 2), return_exceptions=True)
    finally:
        await model.aclose()
    served = [o for o in outcomes if isinstance(o, tuple)]
    busy = [o for o in outcomes if isinstance(o, ChatModelError)]
    assert len(served) == 1 and len(served[0][0]) > 3
    assert len(busy) == 1
    assert busy[0].kind is ChatErrorKind.BUSY and busy[0].code == "BUSY" and not busy[0].partial
    assert "busy" in busy[0].message
    assert REGISTRY.get_sample_value("llm_errors_total", {"kind": "busy"}) == before + 1
    assert model.breaker.closed and model.breaker.failure_count == 0  # busy is not a model failure
