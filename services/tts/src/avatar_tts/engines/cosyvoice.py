"""CosyVoice 2/3 (LLM + flow matching, zero-shot cloning): the production HQ tier, on GPU.

Loaded through the library's API from an operator-filled model directory
(``pretrained_models/CosyVoice2-0.5B`` layout): ``cosyvoice.cli.cosyvoice.AutoModel(model_dir=...)``
where the installed version has it (CosyVoice 3), else ``CosyVoice2(model_dir, load_jit=False,
load_trt=False, fp16=...)``. Cloning is ``inference_zero_shot(tts_text, prompt_text, prompt,
stream=False, speed=...)``, whose items are ``{"tts_speech": tensor}`` at ``model.sample_rate``;
the prompt is a 16 kHz tensor (CosyVoice 2) or a WAV path (``prompt_wav``, CosyVoice 3).
The stock voice is ``default_voice.wav`` + ``default_voice.txt`` in the model directory, or the
model's first built-in speaker (``inference_sft``).

A style instruction ("speak cheerfully", OpenAI's ``instructions``, the reply emotion's
``instruction`` from the persona file) switches to the instruct mode,
``inference_instruct2(tts_text, instruct_text, prompt, stream=False, speed=...)``, with the same
prompt clip (the reference, or the stock voice); the instruction text ends with the model's
``<|endofprompt|>`` marker, and CosyVoice 3 (``prompt_wav``) wants its system preamble in front
(docs/avatar-control.md, "Emotion in the voice").
"""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from avatar_common.audio import resample
from avatar_tts.engine import FloatAudio, Reference, Tier, Voice
from avatar_tts.engines._reference import default_reference, reference_file, to_numpy
from avatar_tts.errors import EngineUnavailableError, InvalidTextError

PROMPT_RATE = 16000
END_OF_PROMPT = "<|endofprompt|>"
#: CosyVoice 3 reads an instruction as a chat-style system turn.
V3_PREAMBLE = "You are a helpful assistant. "


def instruct_text(instructions: str, *, version3: bool) -> str:
    """The instruction as the model's instruct mode reads it."""
    text = instructions.strip().replace(END_OF_PROMPT, "")
    return f"{V3_PREAMBLE if version3 else ''}{text}{END_OF_PROMPT}"


class CosyVoiceEngine:
    name = "cosyvoice"
    tier = Tier.HQ
    can_clone = True
    follows_instructions = True
    estimate_mb = 4000.0

    def __init__(
        self,
        model_dir: Path,
        *,
        fp16: bool = False,
        languages: tuple[str, ...] = ("zh", "en", "ja", "ko"),
        import_module: Callable[[str], ModuleType] = importlib.import_module,
    ) -> None:
        self._dir = model_dir
        self._fp16 = fp16
        self._languages = languages
        self._import = import_module
        self._model: Any = None
        self._sample_rate = 24000
        self._lock = threading.Lock()

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    def voices(self) -> list[Voice]:
        return [Voice("cosyvoice:default", "default", self.name, self._languages, self.tier, can_clone=True)]

    def load(self) -> None:
        if not self._dir.is_dir():
            raise EngineUnavailableError(f"CosyVoice model directory {self._dir} does not exist")
        try:
            mod = self._import("cosyvoice.cli.cosyvoice")
        except ImportError as exc:
            raise EngineUnavailableError(
                "the cosyvoice package is not installed (install CosyVoice from its repository)"
            ) from exc
        auto = getattr(mod, "AutoModel", None)
        if auto is not None:
            self._model = auto(model_dir=str(self._dir))
        else:
            self._model = mod.CosyVoice2(str(self._dir), load_jit=False, load_trt=False, fp16=self._fp16)
        self._sample_rate = int(self._model.sample_rate)

    def unload(self) -> None:
        self._model = None

    @staticmethod
    def _prompt(method: Any, wav: Path, samples: FloatAudio) -> tuple[object, bool]:
        """The prompt clip as ``method`` takes it (a WAV path for CosyVoice 3, else a 16 kHz
        tensor), and whether it is CosyVoice 3."""
        if "prompt_wav" in inspect.signature(method).parameters:
            return str(wav), True
        import torch

        return torch.from_numpy(samples).unsqueeze(0), False

    def _zero_shot(
        self,
        model: Any,
        text: str,
        transcript: str,
        wav: Path,
        samples: FloatAudio,
        speed: float,
        instructions: str | None = None,
    ) -> Iterator[FloatAudio]:
        if instructions and hasattr(model, "inference_instruct2"):
            prompt, v3 = self._prompt(model.inference_instruct2, wav, samples)
            style = instruct_text(instructions, version3=v3)
            items = model.inference_instruct2(text, style, prompt, stream=False, speed=speed)
        else:
            prompt, _v3 = self._prompt(model.inference_zero_shot, wav, samples)
            items = model.inference_zero_shot(text, transcript, prompt, stream=False, speed=speed)
        for item in items:
            yield to_numpy(item["tts_speech"])

    def synthesize(
        self,
        text: str,
        voice: Voice,
        *,
        language: str,
        speed: float,
        reference: Reference | None = None,
        instructions: str | None = None,
    ) -> Iterator[FloatAudio]:
        model = self._model
        if model is None:
            raise EngineUnavailableError("the CosyVoice model is not loaded")
        with self._lock:
            if reference is not None:
                if not reference.transcript.strip():
                    raise InvalidTextError("cloning with CosyVoice needs the reference clip's transcript")
                prompt16 = resample(reference.samples, reference.sample_rate, PROMPT_RATE)
                with reference_file(reference, PROMPT_RATE) as path:
                    yield from self._zero_shot(
                        model, text, reference.transcript, path, prompt16, speed, instructions
                    )
                return
            stock = default_reference(self._dir)
            if stock is not None:
                from avatar_common.audio import decode_audio

                decoded = decode_audio(stock[0].read_bytes())
                prompt16 = resample(decoded.samples, decoded.sample_rate, PROMPT_RATE)
                yield from self._zero_shot(model, text, stock[1], stock[0], prompt16, speed, instructions)
                return
            speakers = list(model.list_available_spks()) if hasattr(model, "list_available_spks") else []
            if not speakers:
                raise EngineUnavailableError(
                    "CosyVoice has no stock voice: put default_voice.wav and "
                    f"default_voice.txt in {self._dir}"
                )
            for item in model.inference_sft(text, speakers[0], stream=False, speed=speed):
                yield to_numpy(item["tts_speech"])
