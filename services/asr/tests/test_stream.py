"""Streaming recognition with the real model: accuracy, endpointing, partials, speculation, bad input."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from avatar_asr.config import ASRConfig
from avatar_asr.engine import Recognition, WhisperEngine
from avatar_asr.errors import ASRError
from avatar_asr.service import ASRService
from avatar_asr.stream import EventKind, StreamEvent
from avatar_asr.vad import FloatAudio
from avatar_common.audio import last_speech_ms, resample
from services.asr.tests.helpers import (
    asr_config,
    finals,
    kinds,
    noise,
    normalize_words,
    pcm16,
    run_stream,
    silence,
    wer,
)
from tests.support.audio import SpeechClip, load_librivox

pytestmark = pytest.mark.slow


async def test_streaming_wer_over_librivox_is_at_most_5_percent(
    asr_service: ASRService, librivox: list[SpeechClip]
) -> None:
    hypotheses = []
    for clip in librivox:
        session = asr_service.open_stream(language="en")
        events = await run_stream(session, clip.pcm + pcm16(silence(0.8)), chunk_ms=250)
        assert kinds(events)[-1] is EventKind.END
        assert EventKind.ERROR not in kinds(events)
        texts = [e.recognition.text for e in finals(events) if e.recognition]
        assert texts, f"no final for {clip.name}"
        hypotheses.append(" ".join(texts))
        for event in finals(events):
            assert event.utterance is not None and event.utterance.size > 0
            assert event.recognition is not None and event.recognition.language == "en"
            assert event.recognition.words, "finals carry word timings"
            threshold = asr_service.config.low_confidence_threshold
            assert event.recognition.low_confidence == (event.recognition.confidence < threshold)
    score = wer([c.transcript for c in librivox], hypotheses)
    assert score <= 0.05, f"WER {score:.3f}: {hypotheses}"


async def test_vad_segments_speech_between_silence_and_noise(
    asr_service: ASRService, librivox: list[SpeechClip]
) -> None:
    first, second = librivox[1], librivox[4]
    parts = [silence(1.0), first.samples, noise(1.5, 0.01), second.samples, silence(1.0)]
    audio = np.concatenate(parts)
    regions = asr_service.vad.speech_regions(audio, min_silence_ms=500)
    assert len(regions) == 2
    first_start = 1.0
    first_end = first_start + first.duration_s
    second_start = first_end + 1.5
    assert regions[0].start == pytest.approx(first_start, abs=0.4)
    assert regions[0].end == pytest.approx(first_end, abs=0.4)
    assert regions[1].start == pytest.approx(second_start, abs=0.4)

    session = asr_service.open_stream(language="en")
    events = await run_stream(session, pcm16(audio), chunk_ms=200)
    got = finals(events)
    assert len(got) == 2, [e.recognition.text for e in got if e.recognition]
    assert got[0].audio_start_ms / 1000 == pytest.approx(first_start, abs=0.4)
    assert got[1].audio_start_ms / 1000 == pytest.approx(second_start, abs=0.4)
    assert kinds(events).count(EventKind.SPEECH_STARTED) == 2
    for event, clip in zip(got, (first, second), strict=True):
        assert event.recognition is not None
        # Each final is its clip's words; Whisper-base may get one word wrong depending on the
        # exact samples it is given (the accuracy tests are the WER ones; this one is about the
        # VAD's cuts). With the speculation's tail read as noise, "ill-disposed" here came out
        # "ill sposed" (docs/adr/0014-voice-latency.md, "Seventh round").
        reference = normalize_words(clip.transcript).split()
        errors = round(wer([clip.transcript], [event.recognition.text]) * len(reference))
        assert errors <= 1, event.recognition.text


async def test_partial_arrives_before_final_in_real_time(
    asr_service: ASRService, librivox: list[SpeechClip]
) -> None:
    clip = max(librivox, key=lambda c: c.duration_s)
    session = asr_service.open_stream(language="en")
    events = await run_stream(session, clip.pcm + pcm16(silence(1.0)), chunk_ms=100, realtime=True)
    order = kinds(events)
    assert EventKind.PARTIAL in order
    assert (
        order.index(EventKind.SPEECH_STARTED) < order.index(EventKind.PARTIAL) < order.index(EventKind.FINAL)
    )
    partial = next(e for e in events if e.kind is EventKind.PARTIAL)
    assert partial.recognition is not None and partial.recognition.text
    final = finals(events)[-1]
    assert final.recognition is not None
    assert (
        normalize_words(partial.recognition.text).split()[0]
        == normalize_words(final.recognition.text).split()[0]
    )


async def test_speculative_final_is_discarded_when_speech_resumes(
    asr_service: ASRService, librivox: list[SpeechClip]
) -> None:
    first, second = librivox[1], librivox[4]
    (a,) = asr_service.vad.speech_regions(first.samples, pad_ms=0)
    (b,) = asr_service.vad.speech_regions(second.samples, pad_ms=0)
    # A 300 ms pause: longer than the speculation delay (160 ms), shorter than the endpoint (500 ms).
    audio = np.concatenate(
        [
            first.samples[: int(a.end * 16000)],
            silence(0.3),
            second.samples[int(b.start * 16000) :],
            silence(1.0),
        ]
    )
    session = asr_service.open_stream(language="en")
    events = await run_stream(session, pcm16(audio), chunk_ms=100)
    assert session.speculations_cancelled >= 1
    got = finals(events)
    assert len(got) == 1
    assert got[0].recognition is not None
    assert normalize_words(got[0].recognition.text) == normalize_words(
        f"{first.transcript} {second.transcript}"
    )


async def test_speculative_final_is_used_at_the_endpoint(
    asr_service: ASRService, librivox: list[SpeechClip]
) -> None:
    clip = librivox[1]
    session = asr_service.open_stream(language="en")
    events = await run_stream(session, clip.pcm + pcm16(silence(1.0)), chunk_ms=100)
    assert len(finals(events)) == 1
    assert session.speculations_used == 1


class LengthRecordingEngine(WhisperEngine):
    """The real engine, noting how many samples each decode was given."""

    def __init__(self, config: ASRConfig) -> None:
        super().__init__(config)
        self.lengths: list[int] = []

    def recognize(self, samples: FloatAudio, **kwargs: Any) -> Recognition:
        self.lengths.append(int(samples.size))
        return super().recognize(samples, **kwargs)


async def test_a_speculation_before_the_tail_decodes_as_much_audio_as_the_endpoint() -> None:
    # docs/adr/0014-voice-latency.md, "Seventh round": the speculation starts after 64 ms of
    # silence, before the endpoint's 200 ms tail has arrived; the rest of the tail is decoded as
    # silence, so Whisper gets an input as long as the endpoint's own (its words changed with it).
    # (Without the quiet rule: with it the speculation is anchored at the last loud frame, below.)
    cfg = asr_config(speculative_quiet_ms=0)
    assert cfg.speculative_silence_ms < 200
    engine = LengthRecordingEngine(cfg)
    service = ASRService(cfg, engine=engine)
    await service.start(warm_up=False)
    try:
        clip = load_librivox()[1]
        session = service.open_stream(language="en")
        events = await run_stream(session, clip.pcm + pcm16(silence(1.0)), chunk_ms=100)
    finally:
        service.close()
    (final,) = finals(events)
    assert session.speculations_used == 1 and final.utterance is not None
    assert engine.lengths[-1] == final.utterance.size  # the speculation, padded to the endpoint's end


async def test_the_quiet_rule_speculates_inside_the_vads_lag_and_its_final_is_used() -> None:
    # docs/adr/0014-voice-latency.md, "Tenth round": the VAD calls the decay of the last word speech
    # for up to ~220 ms; the speculation starts 96 ms after the last loud frame and decodes up to it
    # plus the tail pad, less than the endpoint's own audio, and the final is the same words.
    cfg = asr_config()
    assert cfg.speculative_quiet_ms > 0
    engine = LengthRecordingEngine(cfg)
    service = ASRService(cfg, engine=engine)
    await service.start(warm_up=False)
    try:
        clip = load_librivox()[4]  # its VAD lags ~180 ms behind the last loud sound
        session = service.open_stream(language="en")
        # at real time, as a microphone: the recognizer is free when the pause comes
        events = await run_stream(session, clip.pcm + pcm16(silence(1.0)), chunk_ms=100, realtime=True)
    finally:
        service.close()
    (final,) = finals(events)
    assert session.speculations_used == 1 and final.utterance is not None
    assert engine.lengths[-1] < final.utterance.size - 0.05 * 16000
    assert final.recognition is not None
    assert wer([clip.transcript], [final.recognition.text]) <= 0.1


async def test_a_speculation_speech_interrupts_is_delivered_as_a_partial(
    asr_service: ASRService, librivox: list[SpeechClip]
) -> None:
    first, second = librivox[1], librivox[4]
    (b,) = asr_service.vad.speech_regions(second.samples, pad_ms=0)
    head = first.samples[: int(last_speech_ms(first.pcm) * 16)]
    # 150 ms of silence: inside the VAD's lag, longer than the quiet rule's 96 ms
    audio = np.concatenate([head, silence(0.15), second.samples[int(b.start * 16000) :], silence(1.0)])
    session = asr_service.open_stream(language="en")
    events = await run_stream(session, pcm16(audio), chunk_ms=100, realtime=True)
    assert session.speculations_cancelled >= 1
    # a partial with word timings is a speculation's decode (partials are decoded without them),
    # here of the words up to a pause: the first clip's, or a shorter pause inside it
    spoken = [
        e.recognition for e in events if e.kind is EventKind.PARTIAL and e.recognition and e.recognition.words
    ]
    assert spoken
    whole = normalize_words(f"{first.transcript} {second.transcript}")
    assert all(whole.startswith(normalize_words(r.text)) for r in spoken)
    (final,) = finals(events)
    assert final.recognition is not None
    assert wer([f"{first.transcript} {second.transcript}"], [final.recognition.text]) <= 0.1


async def test_other_rates_and_stereo_are_resampled_and_mixed(
    asr_service: ASRService, librivox: list[SpeechClip]
) -> None:
    clip = librivox[4]
    at_44k = resample(np.concatenate([clip.samples, silence(0.8)]), 16000, 44100)
    stereo = np.stack([at_44k, at_44k], axis=1).reshape(-1)
    session = asr_service.open_stream(language="en")
    events = await run_stream(session, pcm16(stereo), sample_rate=44100, channels=2, chunk_ms=200)
    got = finals(events)
    assert len(got) == 1 and got[0].recognition is not None
    assert normalize_words(got[0].recognition.text) == normalize_words(clip.transcript)


async def test_silence_only_reports_no_speech(asr_service: ASRService) -> None:
    session = asr_service.open_stream()
    events = await run_stream(session, pcm16(np.concatenate([silence(1.5), noise(1.0, 0.003)])))
    assert [e.code for e in events if e.kind is EventKind.ERROR] == ["NO_SPEECH"]
    assert not finals(events)
    assert kinds(events)[-1] is EventKind.END


BAD_CHUNKS = [
    (b"\x01\x02\x03", 16000, 1, "INVALID_AUDIO"),  # odd byte count
    (b"\x00\x00" * 320, 4000, 1, "UNSUPPORTED_SAMPLE_RATE"),
    (b"\x00\x00" * 320, 96000, 1, "UNSUPPORTED_SAMPLE_RATE"),
    (b"\x00\x00" * 320, 16000, 6, "INVALID_AUDIO"),  # six channels
    (b"\x00\x00" * 16000 * 31, 16000, 1, "INVALID_AUDIO"),  # one 31 s chunk
]


async def test_bad_chunks_give_error_events_and_the_stream_goes_on(
    asr_service: ASRService, librivox: list[SpeechClip]
) -> None:
    session = asr_service.open_stream(language="en")
    for pcm, rate, channels, _code in BAD_CHUNKS:
        await session.push_pcm(pcm, rate, channels)
    events = await run_stream(session, librivox[1].pcm + pcm16(silence(0.8)))
    errors = [e for e in events if e.kind is EventKind.ERROR]
    assert [e.code for e in errors] == [code for *_rest, code in BAD_CHUNKS]
    assert all(e.message for e in errors)
    got = finals(events)
    assert len(got) == 1 and got[0].recognition is not None
    assert normalize_words(got[0].recognition.text) == normalize_words(librivox[1].transcript)


async def test_stream_limit_gives_busy(asr_service: ASRService) -> None:
    limited = ASRService(asr_config(max_streams=1), engine=asr_service.engine)
    first = limited.open_stream()
    with pytest.raises(ASRError) as refused:
        limited.open_stream()
    assert refused.value.code == "BUSY" and refused.value.status == 503
    await first.aclose()
    second = limited.open_stream()
    await second.aclose()


async def test_concurrent_streams_share_one_model(
    asr_service: ASRService, librivox: list[SpeechClip]
) -> None:
    clips = [librivox[1], librivox[2], librivox[4]]
    sessions = [asr_service.open_stream(language="en") for _ in clips]
    results = await asyncio.gather(
        *(
            run_stream(s, c.pcm + pcm16(silence(0.8)), chunk_ms=100)
            for s, c in zip(sessions, clips, strict=True)
        )
    )
    for events, clip in zip(results, clips, strict=True):
        got = finals(events)
        assert len(got) == 1 and got[0].recognition is not None
        assert normalize_words(got[0].recognition.text) == normalize_words(clip.transcript)
    assert asr_service.active_streams == 0


async def test_long_speech_is_cut_at_the_maximum_utterance_length(
    asr_service: ASRService, librivox: list[SpeechClip]
) -> None:
    clip = librivox[0]  # 7.1 s of continuous reading
    short = ASRService(asr_config(max_utterance_s=3.0), engine=asr_service.engine)
    session = short.open_stream(language="en")
    events = await run_stream(session, clip.pcm + pcm16(silence(0.8)), chunk_ms=200)
    got = finals(events)
    assert len(got) >= 2
    for event in got:
        assert (event.audio_end_ms - event.audio_start_ms) / 1000 <= 3.0 + 0.3
    joined = " ".join(e.recognition.text for e in got if e.recognition)
    assert wer([clip.transcript], [joined]) <= 0.25  # words cut at the boundary may be lost or split


async def test_the_turn_detector_ends_a_finished_sentence_before_the_full_silence(
    asr_service: ASRService, librivox: list[SpeechClip]
) -> None:
    """A clip then 450 ms of silence (under ``min_silence_ms``) and nothing more: the speculative
    transcript ends in a full stop, so the turn ends without the rest of the wait
    (docs/adr/0014-voice-latency.md)."""
    assert asr_service.config.complete_silence_ms < 450 < asr_service.config.min_silence_ms
    clip = max(librivox, key=lambda c: c.duration_s)
    samples = np.frombuffer(clip.pcm, "<i2")[: int(last_speech_ms(clip.pcm) * 16)]
    session = asr_service.open_stream(language="en")
    got: list[StreamEvent] = []

    async def until_final() -> None:
        async for event in session.events():
            got.append(event)
            if event.kind is EventKind.FINAL:
                return

    reader = asyncio.create_task(until_final())
    audio = samples.tobytes() + pcm16(silence(0.45))
    for start in range(0, len(audio), 3200):
        await session.push_pcm(audio[start : start + 3200], 16000, 1)
    await asyncio.wait_for(reader, 120)  # no end_input: only the detector can end it
    final = got[-1]
    assert final.recognition is not None and final.recognition.text.endswith(".")
    await session.aclose()
