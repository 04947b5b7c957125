"""Speaker embeddings with Resemblyzer's GE2E encoder (256-dim, weights packaged in the wheel), and
the decoder that turns an uploaded voice sample into measured PCM16.

Both run CPU work in worker threads. The encoder loads on first use (torch and the model take a
couple of seconds) and embeds one clip at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from avatar.application.ports.common import ComponentHealth
from avatar.application.voice_profiles import DecodedClip, SampleTooLongError, UnsupportedFormatError
from avatar.domain.errors import DependencyError, InvalidInputError
from avatar.settings import Settings
from avatar_common.audio import (
    AudioDecodeError,
    clipping_ratio,
    decode_audio,
    float_to_pcm16,
    pcm16_to_float,
    resample,
    rms_dbfs,
)
from avatar_common.modelstore import ModelError, ModelIntegrityError

log = logging.getLogger(__name__)

ENCODER_RATE = 16000
EMBEDDING_DIM = 256
#: Container names as the decoders report them, mapped to the format names of the API.
_FORMAT_NAMES = {"wave": "wav", "wavex": "wav", "matroska": "webm", "ogg": "ogg", "oga": "ogg"}


class ResemblyzerSpeakerEncoder:
    """GE2E speaker encoder (Resemblyzer) on CPU, satisfying ``SpeakerEncoder``.

    The clip is resampled to 16 kHz, volume-normalized and stripped of long silences (Resemblyzer's
    own preprocessing), then embedded over sliding 1.6 s windows and averaged. The result is
    L2-normalized, so the dot product of two embeddings is their cosine similarity.
    """

    def __init__(self, weights: Path | None = None, *, threads: int = 1) -> None:
        self._weights = weights
        self._threads = threads
        self._model: Any = None
        self._preprocess: Any = None
        self._load_lock = threading.Lock()
        # Torch inference is CPU-bound: one clip at a time keeps latency predictable and leaves the
        # other core to the conversation pipeline.
        self._busy = asyncio.Semaphore(1)
        self.load_seconds: float | None = None

    @property
    def dim(self) -> int:
        return EMBEDDING_DIM

    def _ensure_loaded(self) -> Any:
        with self._load_lock:
            if self._model is None:
                start = time.perf_counter()
                with warnings.catch_warnings():
                    # resemblyzer pulls in webrtcvad (pkg_resources) and scipy.ndimage.morphology,
                    # both of which warn about deprecations on import.
                    warnings.simplefilter("ignore")
                    import torch
                    from resemblyzer import VoiceEncoder, preprocess_wav

                torch.set_num_threads(max(1, self._threads))
                weights = self._weights
                if weights is not None and not weights.exists():
                    raise DependencyError(f"speaker encoder weights not found at {weights}")
                self._model = VoiceEncoder(device="cpu", verbose=False, weights_fpath=weights)
                self._preprocess = preprocess_wav
                self.load_seconds = time.perf_counter() - start
                log.info("speaker encoder loaded in %.2f s", self.load_seconds)
            return self._model

    def _embed_sync(self, pcm: bytes, sample_rate: int) -> tuple[float, ...]:
        model = self._ensure_loaded()
        samples = resample(pcm16_to_float(pcm), sample_rate, ENCODER_RATE)
        if not np.any(samples):
            raise InvalidInputError("the clip is digital silence", code="NO_SPEECH")
        with np.errstate(divide="ignore", invalid="ignore"):
            wav = self._preprocess(samples)
        if wav.size < ENCODER_RATE // 2:
            raise InvalidInputError("the clip has too little speech to recognize a voice", code="NO_SPEECH")
        embedding = np.asarray(model.embed_utterance(wav), dtype=np.float64)
        norm = float(np.linalg.norm(embedding))
        if not np.isfinite(norm) or norm == 0.0:
            raise InvalidInputError("no voice could be recognized in the clip", code="NO_SPEECH")
        return tuple(float(v) for v in embedding / norm)

    async def embed(self, pcm: bytes, sample_rate: int) -> tuple[float, ...]:
        """L2-normalized 256-dim embedding of the speaker in a PCM16 mono clip."""
        if sample_rate <= 0 or len(pcm) < 2 or len(pcm) % 2:
            raise InvalidInputError("expected non-empty PCM16 audio with a positive sample rate")
        async with self._busy:
            return await asyncio.to_thread(self._embed_sync, pcm, sample_rate)

    async def warmup(self) -> None:
        """Load the model and run one embedding so the first real request is not the slow one."""
        t = np.arange(ENCODER_RATE * 2) / ENCODER_RATE
        tone = (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
        with contextlib.suppress(InvalidInputError):
            await self.embed(float_to_pcm16(tone), ENCODER_RATE)

    async def health(self) -> ComponentHealth:
        loaded = self._model is not None
        detail = "loaded" if loaded else "loads on first use"
        if self._weights is not None and not self._weights.exists():
            return ComponentHealth("speaker_encoder", False, f"weights missing: {self._weights}")
        return ComponentHealth("speaker_encoder", True, detail, {"dim": EMBEDDING_DIM, "loaded": loaded})


_UNDECODABLE = "the file is not audio in a supported format (wav, flac, mp3, ogg, opus, webm)"
_DECODE_MESSAGES = {
    "empty": "the file contains no audio samples",
    "no_audio_stream": "the file has no audio stream",
    "corrupt": "the audio is corrupt or truncated",
}


class VoiceSampleDecoder:
    """Decodes an uploaded sample (WAV, FLAC, MP3, Ogg/Opus, WebM, ...) and measures it.

    Satisfies ``avatar.application.voice_profiles.AudioClipDecoder``. Decoding runs in a thread;
    compressed formats go through FFmpeg (PyAV), which stops at ``max_seconds``.
    """

    def _decode_sync(self, data: bytes, max_seconds: float) -> DecodedClip:
        try:
            # A little slack so that "31 s" is reported as too long with its real length.
            decoded = decode_audio(data, max_seconds=max_seconds + 5.0)
        except AudioDecodeError as exc:
            if exc.reason == "too_long":
                raise SampleTooLongError(f"the sample is longer than {max_seconds:.0f} s") from exc
            # The decoder's own text (FFmpeg errno and all) goes to the log, not to the client.
            log.info("voice sample refused (%s): %s", exc.reason, exc)
            raise UnsupportedFormatError(_DECODE_MESSAGES.get(exc.reason, _UNDECODABLE)) from exc
        except Exception as exc:  # a header no decoder path expected must not become a 500
            log.warning("voice sample decoder failed on a malformed file", exc_info=exc)
            raise UnsupportedFormatError(_UNDECODABLE) from exc
        raw_format = decoded.source_format.lower()
        return DecodedClip(
            pcm=float_to_pcm16(decoded.samples),
            sample_rate=decoded.sample_rate,
            source_format=_FORMAT_NAMES.get(raw_format, raw_format),
            source_channels=decoded.source_channels,
            duration_s=decoded.duration_s,
            rms_dbfs=rms_dbfs(decoded.samples),
            clipping_ratio=clipping_ratio(decoded.samples),
        )

    async def decode(self, data: bytes, *, max_seconds: float) -> DecodedClip:
        return await asyncio.to_thread(self._decode_sync, data, max_seconds)


def _weights_path(settings: Settings) -> Path | None:
    from avatar.infrastructure.models import model_manifest

    try:
        return model_manifest(settings).path("resemblyzer-ge2e")
    except ModelIntegrityError:
        raise  # a modified weights file must not fall back to loading the same file unchecked
    except (ModelError, OSError, KeyError) as exc:
        log.warning("resemblyzer weights not resolved through the manifest (%s); using the wheel's", exc)
        return None


async def build_speaker_encoder(
    settings: Settings, stack: contextlib.AsyncExitStack
) -> ResemblyzerSpeakerEncoder:
    """The embedded speaker encoder (no remote placement: it is small and fast on CPU)."""
    return ResemblyzerSpeakerEncoder(_weights_path(settings))
