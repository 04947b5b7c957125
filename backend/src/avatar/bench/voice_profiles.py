"""``avatar bench voice_profiles``: what an upload costs, and how well voices are told apart.

1. Speaker encoder (GE2E, CPU): cold load + first embedding, then embedding time per clip length
   (5, 10, 20, 30 s of LibriVox speech).
2. Sample decoding + measuring per upload format (10 s of speech): WAV, FLAC, MP3, Ogg/Opus.
3. Separation: cosine similarity between two clips of the same speaker vs. clips of different
   speakers (the LibriVox reader, Piper's joe voice, two espeak-ng voices) and the ranking margin.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import time
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

from avatar.bench.report import median, percentile, table, write_section
from avatar.infrastructure.speaker import ResemblyzerSpeakerEncoder, VoiceSampleDecoder
from avatar.settings import Settings
from avatar_common.audio import encode_audio, float_to_pcm16
from avatar_common.modelstore import Manifest

LIBRIVOX_DIR = Path("/usr/share/pocketsphinx/test/data/librivox")
Audio = tuple[npt.NDArray[np.float32], int]
TEXTS = (
    "The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore.",
    "Yesterday we walked along the river to the old mill, and the birds were singing.",
)


def _librivox() -> list[Audio]:
    clips = []
    for path in sorted(LIBRIVOX_DIR.glob("*.wav")):
        data, rate = sf.read(path, dtype="float32")
        clips.append((np.asarray(data, dtype=np.float32), int(rate)))
    return clips


def _speech(seconds: float, clips: list[Audio]) -> Audio:
    joined = np.concatenate([c for c, _ in clips])
    reps = int(np.ceil(seconds * clips[0][1] / joined.size))
    return np.tile(joined, reps)[: int(seconds * clips[0][1])], clips[0][1]


def _espeak(voice: str, pitch: int, text: str) -> Audio:
    out = subprocess.run(
        ["espeak-ng", "-v", voice, "-p", str(pitch), "--stdout", text], capture_output=True, check=True
    )
    data, rate = sf.read(io.BytesIO(out.stdout), dtype="float32")
    return np.asarray(data, dtype=np.float32), int(rate)


def _piper(settings: Settings) -> list[Audio]:
    from piper import PiperVoice

    model = Manifest.load(settings.models.manifest, settings.models.cache_dir).path("piper-en_US-joe-medium")
    voice = PiperVoice.load(model)
    out = []
    for text in TEXTS:
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            voice.synthesize_wav(text, w)
        data, rate = sf.read(io.BytesIO(buf.getvalue()), dtype="float32")
        out.append((np.asarray(data, dtype=np.float32), int(rate)))
    return out


async def _embed(encoder: ResemblyzerSpeakerEncoder, audio: Audio) -> npt.NDArray[np.float64]:
    return np.asarray(await encoder.embed(float_to_pcm16(audio[0]), audio[1]))


async def _run(settings: Settings, quick: bool) -> str:
    runs = 3 if quick else 10
    clips = _librivox()
    if not clips:
        raise SystemExit("pocketsphinx-testdata is not installed (LibriVox clips are needed)")
    weights = Manifest.load(settings.models.manifest, settings.models.cache_dir).path("resemblyzer-ge2e")
    encoder = ResemblyzerSpeakerEncoder(weights)

    t = time.perf_counter()
    await _embed(encoder, _speech(5.0, clips))
    cold_ms = (time.perf_counter() - t) * 1000.0
    print(f"encoder cold start (load + first 5 s clip): {cold_ms:.0f} ms (load {encoder.load_seconds:.2f} s)")

    embed_rows: list[list[object]] = []
    for seconds in (5.0, 10.0, 20.0, 30.0):
        audio = _speech(seconds, clips)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            await _embed(encoder, audio)
            times.append((time.perf_counter() - t) * 1000.0)
        embed_rows.append(
            [f"{seconds:.0f} s", median(times), percentile(times, 95), median(times) / (seconds * 1000.0)]
        )
        print(f"embed {seconds:.0f} s: median {median(times):.0f} ms, P95 {percentile(times, 95):.0f} ms")

    decoder = VoiceSampleDecoder()
    ten = _speech(10.0, clips)
    decode_rows: list[list[object]] = []
    for fmt in ("wav", "flac", "mp3", "opus"):
        data = encode_audio(ten[0], ten[1], fmt)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            await decoder.decode(data, max_seconds=30.0)
            times.append((time.perf_counter() - t) * 1000.0)
        decode_rows.append([fmt, f"{len(data) / 1024:.0f}", median(times), percentile(times, 95)])
        print(f"decode {fmt} ({len(data) // 1024} KiB): median {median(times):.1f} ms")

    halves = [clips[0], clips[2]], [clips[1], clips[3], clips[4]]
    speakers: dict[str, list[Audio]] = {
        "reader (LibriVox)": [(np.concatenate([c for c, _ in h]), clips[0][1]) for h in halves],
        "joe (Piper)": _piper(settings),
        "espeak m3": [_espeak("en-us+m3", 35, x) for x in TEXTS],
        "espeak f2": [_espeak("en+f2", 75, x) for x in TEXTS],
    }
    first = {k: await _embed(encoder, v[0]) for k, v in speakers.items()}
    second = {k: await _embed(encoder, v[1]) for k, v in speakers.items()}
    sep_rows: list[list[object]] = []
    correct = 0
    for name in speakers:
        same = float(first[name] @ second[name])
        other_name, other = max(
            ((o, float(first[o] @ second[name])) for o in speakers if o != name), key=lambda pair: pair[1]
        )
        correct += same > other
        sep_rows.append([name, same, f"{other:.3f} ({other_name})", same - other])
        print(f"{name}: same {same:.3f}, closest other {other:.3f} ({other_name})")

    return "\n\n".join(
        [
            f"Speaker encoder cold start (model load + first 5 s clip): **{cold_ms:.0f} ms**. "
            f"Embedding time per clip ({runs} runs each; RTF = median / clip length):",
            table(["clip", "median ms", "P95 ms", "RTF"], embed_rows),
            "Decoding and measuring one 10 s upload (`VoiceSampleDecoder`, libsndfile / FFmpeg):",
            table(["format", "KiB", "median ms", "P95 ms"], decode_rows),
            f"Separation (cosine of GE2E embeddings, second clip of each speaker vs. every first clip): "
            f"the same speaker ranked first for **{correct}/{len(speakers)}** speakers.",
            table(["speaker", "same speaker", "closest other speaker", "margin"], sep_rows),
        ]
    )


def main(settings: Settings, quick: bool) -> int:
    body = asyncio.run(_run(settings, quick))
    write_section("voice_profiles", body)
    return 0
