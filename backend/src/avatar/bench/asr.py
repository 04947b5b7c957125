"""``avatar bench asr``: the ASR service against faster-whisper alone, and its streaming latencies.

Measures, on the LibriVox clips of ``pocketsphinx-testdata``:

* RTF (decode time / audio time) of the service's OpenAI endpoint over real HTTP (decode, VAD,
  Whisper, filtering) and of a bare ``faster_whisper.WhisperModel.transcribe`` on the same audio with
  the same decoding options, and their ratio;
* streaming at real-time pace: the delay of the final result after the last speech audio arrived and
  after the endpoint was decided (P50/P95), the interval between partial updates, how often the
  speculative final was used;
* peak memory (RSS high-water mark) of the process running the service.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import resource
import threading
import time
from typing import Any

import numpy as np

from avatar.bench.live import free_port
from avatar.bench.report import median, percentile, table, write_section
from avatar.bench.speech import load_librivox
from avatar.settings import Settings
from avatar_asr.stream import StreamObserver


def _clips() -> list[tuple[str, np.ndarray, str]]:
    return [(c.name, c.samples, c.transcript) for c in load_librivox()]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _service_rtf(service: object, clips: list[tuple[str, np.ndarray, str]], reps: int) -> list[float]:
    """RTF of ``POST /v1/audio/transcriptions`` against a real uvicorn server of the service app."""
    import httpx
    import uvicorn

    from avatar_asr.app import create_app
    from avatar_asr.service import ASRService
    from avatar_common.audio import encode_wav

    assert isinstance(service, ASRService)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(service.config, service=service), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    rtfs = []
    try:
        with httpx.Client(timeout=300) as http:
            for _ in range(reps):
                for name, samples, _text in clips:
                    started = time.perf_counter()
                    response = http.post(
                        f"http://127.0.0.1:{port}/v1/audio/transcriptions",
                        files={"file": (f"{name}.wav", encode_wav(samples, 16000), "audio/wav")},
                        data={"language": "en", "response_format": "verbose_json"},
                    )
                    response.raise_for_status()
                    rtfs.append((time.perf_counter() - started) / (len(samples) / 16000))
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    return rtfs


def _direct_rtf(
    model_dir: str, settings: Settings, clips: list[tuple[str, np.ndarray, str]], reps: int
) -> list[float]:
    """RTF of faster-whisper called directly with the service's decoding options."""
    from faster_whisper import WhisperModel

    cfg = settings.asr
    model = WhisperModel(
        model_dir, device=cfg.device, compute_type=cfg.compute_type, cpu_threads=cfg.cpu_threads
    )
    model.transcribe(np.zeros(16000, np.float32), language="en")  # warm-up, as the service does
    rtfs = []
    for _ in range(reps):
        for _name, samples, _text in clips:
            started = time.perf_counter()
            segments, _info = model.transcribe(
                samples,
                language="en",
                beam_size=cfg.beam_size,
                word_timestamps=True,
                condition_on_previous_text=False,
            )
            list(segments)
            rtfs.append((time.perf_counter() - started) / (len(samples) / 16000))
    return rtfs


async def _stream_one(service: Any, samples: np.ndarray, out: dict[str, list[float]]) -> None:
    """Stream one clip at real-time pace (100 ms chunks) followed by 1 s of silence."""
    from avatar_asr.stream import EventKind
    from avatar_common.audio import float_to_pcm16

    session = service.open_stream(language="en")
    pcm = float_to_pcm16(np.concatenate([samples, np.zeros(16000, np.float32)]))
    step = 1600 * 2
    partial_times: list[float] = []
    started_at: list[float] = []

    async def collect() -> None:
        async for event in session.events():
            now = time.perf_counter()
            if event.kind is EventKind.SPEECH_STARTED:
                started_at.append(now)
            elif event.kind is EventKind.PARTIAL:
                partial_times.append(now)
            elif event.kind is EventKind.FINAL:
                out["after_speech"].append(event.since_speech_end_ms)
                out["after_endpoint"].append(event.latency_ms)

    collector = asyncio.create_task(collect())
    t0 = time.perf_counter()
    for i, start in enumerate(range(0, len(pcm), step)):
        await session.push_pcm(pcm[start : start + step])
        await asyncio.sleep(max(0.0, t0 + (i + 1) * 0.1 - time.perf_counter()))
    await session.end_input()
    await collector
    out["spec_used"].append(float(session.speculations_used))
    await session.aclose()
    out["partial_interval"] += [1000 * (b - a) for a, b in itertools.pairwise(partial_times)]
    if partial_times and started_at:
        out["first_partial"].append(1000 * (partial_times[0] - started_at[0]))


async def _stream_latencies(service: Any, clips: list[tuple[str, np.ndarray, str]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {
        "after_speech": [],
        "after_endpoint": [],
        "partial_interval": [],
        "first_partial": [],
        "spec_used": [],
    }
    for _name, samples, _text in clips:
        await _stream_one(service, samples, out)
    return out


class _DecodeTimes(StreamObserver):
    """Records the wall time of every Whisper call the streams make."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = {"partial": [], "final": []}

    def decoded(self, kind: str, recognition: Any) -> None:
        self.seconds.setdefault(kind, []).append(recognition.decode_s)

    def result_latency(self, kind: str, seconds: float) -> None:
        pass

    def vad_frames(self, speech: int, total: int) -> None:
        pass


def main(settings: Settings, quick: bool) -> int:
    from avatar.infrastructure.asr import service_config
    from avatar_asr.service import ASRService

    clips = _clips()
    if not clips:
        print("pocketsphinx-testdata is not installed: run `make setup-test`")
        return 1
    if quick:
        clips = clips[:3]
    reps = 1 if quick else 3
    config = service_config(settings)
    decodes = _DecodeTimes()
    service = ASRService(config, observer=decodes)
    load_started = time.perf_counter()
    asyncio.run(service.start(warm_up=True))
    load_s = time.perf_counter() - load_started
    try:
        service_rtf = _service_rtf(service, clips, reps)
        service.observer = decodes  # the app installed its metrics; measure the streams' decodes here
        stream = asyncio.run(_stream_latencies(service, clips))
    finally:
        service.close()
    peak_service_mb = _peak_rss_mb()
    direct_rtf = _direct_rtf(config.model, settings, clips, reps)

    rtf_ratio = median(service_rtf) / median(direct_rtf)
    audio_s = sum(len(s) for _n, s, _t in clips) / 16000

    def row(label: str, values: list[float]) -> list[object]:
        if not values:
            return [label, "n/a", "n/a", 0]
        return [label, round(median(values), 3), round(percentile(values, 95), 3), len(values)]

    rows = [
        row("RTF, service (HTTP: decode + VAD + Whisper)", service_rtf),
        row("RTF, faster-whisper called directly", direct_rtf),
        row("Whisper call while streaming, partial (s)", decodes.seconds["partial"]),
        row("Whisper call while streaming, final (s)", decodes.seconds["final"]),
        row("final after end of speech (ms)", stream["after_speech"]),
        row("final after the endpoint was decided (ms)", stream["after_endpoint"]),
        row("partial update interval (ms)", stream["partial_interval"]),
        row("first partial after speech start (ms)", stream["first_partial"]),
    ]
    load1, _load5, _load15 = os.getloadavg()
    body = "\n".join(
        [
            f"Model `{config.model_name}` ({config.device}/{config.compute_type}, "
            f"{config.cpu_threads} threads, beam {config.beam_size}); {len(clips)} LibriVox clips, "
            f"{audio_s:.1f} s of speech, {reps} "
            f"repetition(s){' (--quick)' if quick else ''}; streams fed at real-time pace in 100 ms chunks. "
            f"Endpoint after {config.min_silence_ms} ms of silence; speculative final after "
            f"{config.speculative_silence_ms} ms; partials every >= {config.partial_interval_ms} ms of new "
            f"audio. Load average at the end: {load1:.1f} on {os.cpu_count()} cores (other work shares "
            "this machine).",
            "",
            table(["measure", "median (P50)", "P95", "n"], rows),
            "",
            f"- RTF ratio service / direct (medians): **{rtf_ratio:.2f}**",
            f"- speculative final used at the endpoint: {sum(stream['spec_used']):.0f} of "
            f"{len(stream['after_speech'])} finals",
            f"- model load + warm-up: {load_s:.1f} s; peak RSS of the service process: "
            f"{peak_service_mb:.0f} MiB",
            f'- "after end of speech" includes the {config.min_silence_ms} ms of silence the VAD must hear '
            "before it may end the utterance; a final costs one Whisper call (~0.9 s on an idle core pair), "
            "started speculatively at the first pause and run beside any partial already in flight.",
        ]
    )
    print(body)
    write_section("asr", body)
    return 0
