"""``avatar bench tts``: first-audio latency against raw Piper, RTF per engine, HQ pass duration.

- *First audio after the first clause*: an LLM-like token stream goes into the service; the clock
  starts when the token completing the first clause is handed over and stops at the first audio
  chunk. The baseline is raw ``piper.PiperVoice.synthesize`` on the same clause (model already
  loaded); the ratio is the service's overhead (chunking, threads, queueing).
- *RTF* (synthesis seconds / audio seconds) per engine on the same sentences.
- *HQ pass*: the Kokoro model's cold load, and the whole HQ utterance of a reply.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from avatar.bench.report import median, percentile, table, write_section
from avatar.settings import Settings

if TYPE_CHECKING:
    from avatar_tts.service import TTSService

REPLIES = [
    "Sure, I can help with that. The museum opens at nine and closes at six on weekdays.",
    "That sounds like a lovely plan. Remember to bring water and a warm jacket for the evening.",
    "Good question. Most people sleep better when they keep the same schedule every day.",
    "I am sorry to hear that. Would you like to talk about what happened at work today?",
    "Absolutely, here is a simple idea. Start with ten minutes of reading before bed.",
    "Of course. The train leaves from platform four, and the trip takes about forty minutes.",
    "Well, it depends on the season. In spring the gardens are full of tulips and daffodils.",
    "Great job on finishing the project. You should be proud of how much you learned.",
]


def _tokens(text: str) -> list[str]:
    words = text.split(" ")
    out: list[str] = []
    for i, word in enumerate(words):
        piece = word if i == 0 else " " + word
        if piece[-1] in ",.?!":
            out += [piece[:-1], piece[-1]]
        else:
            out.append(piece)
    return out


async def _service_first_audio(service: TTSService, text: str) -> tuple[float, str]:
    """Seconds from the first clause's last token to the first audio; and that clause."""
    from avatar_common.text import ClauseChunker

    tokens = _tokens(text)
    probe = ClauseChunker()
    clause_done: list[float] = []
    first_clause = ""
    for tok in tokens:
        got = probe.feed(tok)
        if got:
            first_clause = got[0]
            break

    async def stream() -> AsyncIterator[str]:
        chunker = ClauseChunker()
        for tok in tokens:
            if chunker.feed(tok) and not clause_done:
                clause_done.append(time.perf_counter())
            yield tok
            await asyncio.sleep(0.005)  # an LLM at ~200 tokens/s

    utt = await service.synthesize(pieces=stream())
    first = None
    async for _audio in utt.chunks():
        if first is None:
            first = time.perf_counter()
    await utt.aclose()
    assert first is not None and clause_done
    return first - clause_done[0], first_clause


def _raw_piper_first_chunk(voice: object, clause: str) -> float:
    start = time.perf_counter()
    for _chunk in voice.synthesize(clause):  # type: ignore[attr-defined]
        return time.perf_counter() - start
    return float("nan")


async def _run(settings: Settings, quick: bool) -> str:
    from avatar.infrastructure.tts import service_config
    from avatar_tts.engine import Tier
    from avatar_tts.service import TTSService

    replies = REPLIES[:3] if quick else REPLIES
    config = service_config(settings)
    config.idle_unload_s = 0
    service = TTSService(config)
    await service.start()
    try:
        # Warm-up: the first synthesis of a fresh ONNX session is slower.
        await (await service.synthesize("Warm up.")).read_all()

        from piper import PiperVoice

        assert config.piper_model is not None
        raw = PiperVoice.load(str(config.piper_model))
        _raw_piper_first_chunk(raw, "Warm up.")

        ours, base, ratios = [], [], []
        for text in replies:
            ttfa, clause = await _service_first_audio(service, text)
            baseline = await asyncio.to_thread(_raw_piper_first_chunk, raw, clause)
            ours.append(ttfa)
            base.append(baseline)
            ratios.append(ttfa / baseline)

        rtf_rows = []
        for engine, tier, voice in (
            ("piper", Tier.FAST, None),
            ("espeak", Tier.FAST, "espeak:en-us"),
            ("kokoro", Tier.HQ, None),
        ):
            rtfs = []
            for text in replies:
                utt = await service.synthesize(text, tier=tier, voice=voice)
                await utt.read_all()
                assert utt.engine == engine, (utt.engine, utt.notice)
                rtfs.append(utt.synth_seconds / utt.audio_seconds)
            rtf_rows.append((engine, len(rtfs), median(rtfs), percentile(rtfs, 95)))

        # Cold HQ: unload, then time the load and whole HQ passes.
        await service.manager.aclose()
        hq_total = []
        load_start = time.perf_counter()
        async with service.manager.lease("kokoro"):
            pass
        load_s = time.perf_counter() - load_start
        for text in replies:
            start = time.perf_counter()
            utt = await service.synthesize(text, tier=Tier.HQ)
            await utt.read_all()
            hq_total.append(time.perf_counter() - start)
    finally:
        await service.aclose()

    latency = table(
        ["measure", "n", "median s", "P50 s", "P95 s"],
        [
            (
                "service: first clause complete -> first audio",
                len(ours),
                median(ours),
                percentile(ours, 50),
                percentile(ours, 95),
            ),
            (
                "raw Piper on the same clause -> first chunk",
                len(base),
                median(base),
                percentile(base, 50),
                percentile(base, 95),
            ),
            (
                "ratio service / raw Piper",
                len(ratios),
                median(ratios),
                percentile(ratios, 50),
                percentile(ratios, 95),
            ),
        ],
    )
    rtf = table(["engine", "utterances", "RTF median", "RTF P95"], rtf_rows)
    hq = table(
        ["measure", "n", "median s", "P95 s"],
        [
            ("Kokoro cold load", 1, load_s, load_s),
            (
                "HQ pass (whole reply, model loaded)",
                len(hq_total),
                median(hq_total),
                percentile(hq_total, 95),
            ),
        ],
    )
    mode = "quick" if quick else "full"
    load = os.getloadavg()[0]
    notes = (
        f"Load average {load:.1f} during the run (shared cores: read ratios, not single values). "
        "The service's first-audio time starts at the token that completes the first clause "
        "(for an ASCII full stop, the token after it); the baseline is raw Piper on that clause with "
        "a warm model, so the ratio is what chunking, threads and queues add. Kokoro runs on CPU here "
        "(int8); production HQ is CosyVoice on GPU, not measurable on this machine."
    )
    return (
        f"Mode: {mode}, {len(replies)} two-sentence replies streamed token by token (~200 tokens/s).\n\n"
        f"{notes}\n\n"
        f"### First audio\n\n{latency}\n\n### Real-time factor (synthesis time / audio time)\n\n{rtf}\n\n"
        f"### HQ pass\n\n{hq}\n"
    )


def main(settings: Settings, quick: bool) -> int:
    """Run the TTS benchmark, print it and write the ``tts`` section of docs/benchmarks.md."""
    body = asyncio.run(_run(settings, quick))
    print(body)
    write_section("tts", body)
    return 0
