"""``avatar bench llm``: time to first token, to the first complete clause, and tokens/s.

Runs the embedded llama.cpp server (or ``settings.llm.base_url`` when placement is remote) and
streams replies to a fixed set of prompts through the real adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time

from avatar.application.ports.llm import ChatMessage
from avatar.bench.report import median, percentile, table, write_section
from avatar.settings import Settings

PROMPTS = [
    "Hi! How are you today?",
    "Tell me something fun about cats.",
    "What should I cook for dinner tonight?",
    "I just finished a marathon!",
    "Can you recommend a good book?",
    "What is your favourite season and why?",
    "I feel a bit tired today.",
    "Say something to cheer me up.",
]
_CLAUSE = re.compile(r"[.!?,;:]\s")


async def _run(settings: Settings, rounds: int) -> dict[str, list[float]]:
    from avatar.infrastructure.llm import build_chat_model

    figures: dict[str, list[float]] = {"ttft": [], "clause": [], "tps": []}
    async with contextlib.AsyncExitStack() as stack:
        model = await build_chat_model(settings, stack)
        system = ChatMessage("system", "You are Hana, a bright and friendly AI VTuber. Reply briefly.")
        for i in range(rounds):
            prompt = PROMPTS[i % len(PROMPTS)]
            start = time.perf_counter()
            first = clause = last = 0.0
            text = ""
            tokens = 0
            async for delta in model.stream_chat(
                [system, ChatMessage("user", prompt)], max_tokens=64, temperature=0.7
            ):
                now = time.perf_counter()
                if not tokens:
                    first = now - start
                tokens += 1
                text += delta
                last = now
                if not clause and _CLAUSE.search(text + " "):
                    clause = now - start
            figures["ttft"].append(first)
            figures["clause"].append(clause or (last - start))
            if tokens > 1 and last > start + first:
                figures["tps"].append((tokens - 1) / (last - start - first))
    return figures


def main(settings: Settings, quick: bool) -> int:
    rounds = 8 if quick else 32
    settings.llm.port = 0  # a free port: never collide with a running instance
    figures = asyncio.run(_run(settings, rounds))
    rows = [
        [
            "time to first token (s)",
            median(figures["ttft"]),
            percentile(figures["ttft"], 50),
            percentile(figures["ttft"], 95),
        ],
        [
            "time to first clause (s)",
            median(figures["clause"]),
            percentile(figures["clause"], 50),
            percentile(figures["clause"], 95),
        ],
        [
            "tokens per second",
            median(figures["tps"]),
            percentile(figures["tps"], 50),
            percentile(figures["tps"], 95),
        ],
    ]
    body = (
        f"Model `{settings.llm.model}` ({settings.llm.placement.value}), {rounds} replies of at most 64 "
        "tokens, streamed through the real adapter (OpenAI-compatible SSE).\n\n"
        + table(["figure", "median", "P50", "P95"], rows)
    )
    print(body)
    write_section("llm", body)
    return 0
