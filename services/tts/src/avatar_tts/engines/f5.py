"""F5-TTS (flow matching, zero-shot): the production fast tier, on GPU.

Loaded through the library's own API, ``f5_tts.api.F5TTS(model, ckpt_file, vocab_file,
vocoder_local_path, device)`` and ``F5TTS.infer(ref_file, ref_text, gen_text, speed=...)``,
from a model directory the operator fills (weights are never fetched at run time):

    <f5_model_dir>/model_*.safetensors | model_*.pt   the checkpoint
    <f5_model_dir>/vocab.txt                          its vocabulary
    <f5_model_dir>/vocos/                             the local Vocos vocoder (optional)
    <f5_model_dir>/default_voice.wav + .txt           the stock voice (a reference clip + transcript)
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from avatar_tts.engine import FloatAudio, Reference, Tier, Voice
from avatar_tts.engines._reference import default_reference, reference_file, to_numpy
from avatar_tts.errors import EngineUnavailableError, InvalidTextError


def _quiet(*_args: object, **_kwargs: object) -> None:
    return None


class F5Engine:
    name = "f5"
    tier = Tier.FAST
    can_clone = True
    estimate_mb = 1500.0

    def __init__(
        self,
        model_dir: Path,
        *,
        model: str = "F5TTS_v1_Base",
        device: str | None = None,
        languages: tuple[str, ...] = ("en", "zh"),
        import_module: Callable[[str], ModuleType] = importlib.import_module,
    ) -> None:
        self._dir = model_dir
        self._model = model
        self._device = device
        self._languages = languages
        self._import = import_module
        self._tts: Any = None
        self._sample_rate = 24000
        # The model's sampler seeds a global RNG per call: one inference at a time.
        self._lock = threading.Lock()

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    def voices(self) -> list[Voice]:
        return [Voice("f5:default", "default", self.name, self._languages, self.tier, can_clone=True)]

    def _checkpoint(self) -> Path:
        for pattern in ("model_*.safetensors", "*.safetensors", "model_*.pt", "*.pt"):
            found = sorted(self._dir.glob(pattern))
            if found:
                return found[-1]
        raise EngineUnavailableError(f"no F5-TTS checkpoint (*.safetensors or *.pt) in {self._dir}")

    def load(self) -> None:
        if not self._dir.is_dir():
            raise EngineUnavailableError(f"F5-TTS model directory {self._dir} does not exist")
        ckpt = self._checkpoint()
        vocab = self._dir / "vocab.txt"
        vocoder = self._dir / "vocos"
        try:
            api = self._import("f5_tts.api")
        except ImportError as exc:
            raise EngineUnavailableError("the f5-tts package is not installed (pip install f5-tts)") from exc
        self._tts = api.F5TTS(
            model=self._model,
            ckpt_file=str(ckpt),
            vocab_file=str(vocab) if vocab.exists() else "",
            vocoder_local_path=str(vocoder) if vocoder.is_dir() else None,
            device=self._device,
        )
        self._sample_rate = int(getattr(self._tts, "target_sample_rate", 24000))

    def unload(self) -> None:
        self._tts = None

    def synthesize(
        self, text: str, voice: Voice, *, language: str, speed: float, reference: Reference | None = None
    ) -> Iterator[FloatAudio]:
        tts = self._tts
        if tts is None:
            raise EngineUnavailableError("the F5-TTS model is not loaded")
        if reference is not None:
            if not reference.transcript.strip():
                # F5 would transcribe the clip with a Whisper model fetched from the hub.
                raise InvalidTextError("cloning with F5-TTS needs the reference clip's transcript")
            with reference_file(reference) as path, self._lock:
                wav, _sr, _spec = tts.infer(
                    ref_file=str(path),
                    ref_text=reference.transcript,
                    gen_text=text,
                    speed=speed,
                    show_info=_quiet,
                )
            yield to_numpy(wav)
            return
        stock = default_reference(self._dir)
        if stock is None:
            raise EngineUnavailableError(
                f"F5-TTS has no stock voice: put default_voice.wav and default_voice.txt in {self._dir}"
            )
        with self._lock:
            wav, _sr, _spec = tts.infer(
                ref_file=str(stock[0]), ref_text=stock[1], gen_text=text, speed=speed, show_info=_quiet
            )
        yield to_numpy(wav)
