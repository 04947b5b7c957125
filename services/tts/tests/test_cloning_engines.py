"""F5-TTS and CosyVoice wrappers against the engine protocol, with stand-in library modules.

The real libraries and their weights cannot be installed here; these tests inject a tiny module
object with the libraries' API shape (``f5_tts.api.F5TTS``, ``cosyvoice.cli.cosyvoice.CosyVoice2``
/ ``AutoModel``) and check everything the wrappers do around it: model-directory layout, loading
arguments, reference clips handed over as files or 16 kHz tensors, outputs turned into float32
audio, the stock voice, errors, and cloning through the service.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from avatar_common.audio import decode_audio, encode_wav
from avatar_tts.engine import Reference, Tier
from avatar_tts.engines.cosyvoice import CosyVoiceEngine
from avatar_tts.engines.espeak import EspeakEngine
from avatar_tts.engines.f5 import F5Engine
from avatar_tts.errors import EngineUnavailableError, InvalidTextError
from avatar_tts.service import ServiceConfig, TTSService


def tone(seconds: float, rate: int, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


class FakeF5:
    """Shape of ``f5_tts.api.F5TTS``: records its arguments, returns 24 kHz audio."""

    instances: ClassVar[list[FakeF5]] = []

    def __init__(
        self, model: str, ckpt_file: str, vocab_file: str, vocoder_local_path: str | None, device: str | None
    ) -> None:
        self.args = {
            "model": model,
            "ckpt_file": ckpt_file,
            "vocab_file": vocab_file,
            "vocoder_local_path": vocoder_local_path,
            "device": device,
        }
        self.target_sample_rate = 24000
        self.calls: list[dict[str, Any]] = []
        FakeF5.instances.append(self)

    def infer(
        self, ref_file: str, ref_text: str, gen_text: str, show_info: Any = print, speed: float = 1.0
    ) -> tuple[np.ndarray, int, None]:
        ref = decode_audio(Path(ref_file).read_bytes())  # the file exists during the call
        self.calls.append(
            {
                "ref_seconds": ref.duration_s,
                "ref_rate": ref.sample_rate,
                "ref_text": ref_text,
                "gen_text": gen_text,
                "speed": speed,
            }
        )
        return tone(0.5 * len(gen_text.split()), 24000), 24000, None


def f5_modules(name: str) -> types.ModuleType:
    if name != "f5_tts.api":
        raise ImportError(name)
    module = types.ModuleType(name)
    module.F5TTS = FakeF5  # type: ignore[attr-defined]
    return module


def no_module(name: str) -> types.ModuleType:
    raise ImportError(f"No module named {name!r}")


@pytest.fixture
def f5_dir(tmp_path: Path) -> Path:
    (tmp_path / "model_1250000.safetensors").write_bytes(b"weights")
    (tmp_path / "vocab.txt").write_text("a\nb\n")
    (tmp_path / "vocos").mkdir()
    (tmp_path / "default_voice.wav").write_bytes(encode_wav(tone(2.0, 24000), 24000))
    (tmp_path / "default_voice.txt").write_text("some call me nature.\n")
    return tmp_path


def profile(seconds: float = 3.0, rate: int = 44100, transcript: str = "this is my voice") -> Reference:
    return Reference(tone(seconds, rate, 180.0), rate, transcript, tuple([0.1] * 256))


def test_f5_loads_from_the_model_directory(f5_dir: Path) -> None:
    engine = F5Engine(f5_dir, device="cuda:0", import_module=f5_modules)
    engine.load()
    args = FakeF5.instances[-1].args
    assert args == {
        "model": "F5TTS_v1_Base",
        "ckpt_file": str(f5_dir / "model_1250000.safetensors"),
        "vocab_file": str(f5_dir / "vocab.txt"),
        "vocoder_local_path": str(f5_dir / "vocos"),
        "device": "cuda:0",
    }
    assert engine.sample_rate == 24000 and engine.can_clone and engine.tier is Tier.FAST


def test_f5_clones_from_the_reference_clip_and_its_transcript(f5_dir: Path) -> None:
    engine = F5Engine(f5_dir, import_module=f5_modules)
    engine.load()
    voice = engine.voices()[0]
    audio = np.concatenate(
        list(engine.synthesize("hello there friend", voice, language="en", speed=1.2, reference=profile()))
    )
    call = FakeF5.instances[-1].calls[-1]
    assert call["ref_text"] == "this is my voice" and call["gen_text"] == "hello there friend"
    assert call["ref_seconds"] == pytest.approx(3.0, abs=0.01) and call["ref_rate"] == 44100
    assert call["speed"] == 1.2
    assert audio.dtype == np.float32 and audio.size == int(1.5 * 24000)


def test_f5_stock_voice_and_missing_transcript(f5_dir: Path) -> None:
    engine = F5Engine(f5_dir, import_module=f5_modules)
    engine.load()
    voice = engine.voices()[0]
    list(engine.synthesize("hi", voice, language="en", speed=1.0))
    assert FakeF5.instances[-1].calls[-1]["ref_text"] == "some call me nature."
    with pytest.raises(InvalidTextError, match="transcript"):
        list(engine.synthesize("hi", voice, language="en", speed=1.0, reference=profile(transcript=" ")))


def test_f5_missing_package_weights_or_directory(tmp_path: Path, f5_dir: Path) -> None:
    with pytest.raises(EngineUnavailableError, match="f5-tts package is not installed"):
        F5Engine(f5_dir, import_module=no_module).load()
    (tmp_path / "empty").mkdir()
    with pytest.raises(EngineUnavailableError, match="no F5-TTS checkpoint"):
        F5Engine(tmp_path / "empty", import_module=f5_modules).load()
    with pytest.raises(EngineUnavailableError, match="does not exist"):
        F5Engine(tmp_path / "nowhere", import_module=f5_modules).load()
    unloaded = F5Engine(f5_dir, import_module=f5_modules)
    with pytest.raises(EngineUnavailableError, match="not loaded"):
        list(unloaded.synthesize("hi", unloaded.voices()[0], language="en", speed=1.0))


class FakeTensor:
    """What CosyVoice yields: a torch-like tensor of shape (1, n)."""

    def __init__(self, data: np.ndarray) -> None:
        self._data = data.reshape(1, -1)

    def detach(self) -> FakeTensor:
        return self

    def cpu(self) -> FakeTensor:
        return self

    def numpy(self) -> np.ndarray:
        return self._data


class FakeCosyVoice2:
    """Shape of CosyVoice 2: prompt as a 16 kHz (1, n) tensor."""

    instances: ClassVar[list[FakeCosyVoice2]] = []

    def __init__(
        self, model_dir: str, load_jit: bool = False, load_trt: bool = False, fp16: bool = False
    ) -> None:
        FakeCosyVoice2.instances.append(self)
        self.model_dir = model_dir
        self.sample_rate = 24000
        self.prompts: list[Any] = []
        self.instructed: list[tuple[str, str, Any]] = []

    def inference_zero_shot(
        self,
        tts_text: str,
        prompt_text: str,
        prompt_speech_16k: Any,
        stream: bool = False,
        speed: float = 1.0,
    ) -> Iterator[dict[str, FakeTensor]]:
        self.prompts.append((prompt_text, prompt_speech_16k))
        for _ in tts_text.split("."):
            yield {"tts_speech": FakeTensor(tone(0.4, 24000))}

    def inference_instruct2(
        self,
        tts_text: str,
        instruct_text: str,
        prompt_speech_16k: Any,
        stream: bool = False,
        speed: float = 1.0,
    ) -> Iterator[dict[str, FakeTensor]]:
        self.instructed.append((tts_text, instruct_text, prompt_speech_16k))
        yield {"tts_speech": FakeTensor(tone(0.25, 24000))}


class FakeAutoModel:
    """Shape of CosyVoice 3's ``AutoModel``: prompt as a WAV path, built-in speakers."""

    instances: ClassVar[list[FakeAutoModel]] = []

    def __init__(self, model_dir: str) -> None:
        FakeAutoModel.instances.append(self)
        self.sample_rate = 22050
        self.prompts: list[tuple[str, int]] = []
        self.instructed: list[tuple[str, str, int]] = []

    def inference_zero_shot(
        self, tts_text: str, prompt_text: str, prompt_wav: str, stream: bool = False, speed: float = 1.0
    ) -> Iterator[dict[str, FakeTensor]]:
        self.prompts.append((prompt_text, int(decode_audio(Path(prompt_wav).read_bytes()).sample_rate)))
        yield {"tts_speech": FakeTensor(tone(0.7, 22050))}

    def inference_instruct2(
        self, tts_text: str, instruct_text: str, prompt_wav: str, stream: bool = False, speed: float = 1.0
    ) -> Iterator[dict[str, FakeTensor]]:
        rate = int(decode_audio(Path(prompt_wav).read_bytes()).sample_rate)
        self.instructed.append((tts_text, instruct_text, rate))
        yield {"tts_speech": FakeTensor(tone(0.2, 22050))}

    def list_available_spks(self) -> list[str]:
        return ["中文女"]

    def inference_sft(
        self, tts_text: str, spk_id: str, stream: bool = False, speed: float = 1.0
    ) -> Iterator[dict[str, FakeTensor]]:
        yield {"tts_speech": FakeTensor(tone(0.3, 22050))}


def cosy_modules(*, auto: bool) -> Any:
    def load(name: str) -> types.ModuleType:
        module = types.ModuleType(name)
        module.CosyVoice2 = FakeCosyVoice2  # type: ignore[attr-defined]
        if auto:
            module.AutoModel = FakeAutoModel  # type: ignore[attr-defined]
        return module

    return load


def test_cosyvoice2_clones_with_a_16k_tensor_prompt(tmp_path: Path) -> None:
    engine = CosyVoiceEngine(tmp_path, import_module=cosy_modules(auto=False))
    engine.load()
    model = FakeCosyVoice2.instances[-1]
    audio = np.concatenate(
        list(
            engine.synthesize(
                "One. Two.", engine.voices()[0], language="en", speed=1.0, reference=profile(2.0, 48000)
            )
        )
    )
    text, prompt = model.prompts[-1]
    assert text == "this is my voice"
    assert tuple(prompt.shape) == (1, 32000)  # resampled to 16 kHz, batch of one
    assert audio.size == 3 * int(0.4 * 24000) and engine.sample_rate == 24000


def test_cosyvoice3_automodel_gets_a_wav_path_and_uses_a_builtin_speaker_without_stock_voice(
    tmp_path: Path,
) -> None:
    engine = CosyVoiceEngine(tmp_path, import_module=cosy_modules(auto=True))
    engine.load()
    assert engine.sample_rate == 22050
    voice = engine.voices()[0]
    list(engine.synthesize("Hi.", voice, language="zh", speed=1.0, reference=profile()))
    prompt_text, prompt_rate = FakeAutoModel.instances[-1].prompts[-1]
    assert (prompt_text, prompt_rate) == ("this is my voice", 16000)
    stock = np.concatenate(list(engine.synthesize("Hi.", voice, language="zh", speed=1.0)))
    assert stock.size == int(0.3 * 22050)


def test_cosyvoice_missing_package(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailableError, match="cosyvoice package is not installed"):
        CosyVoiceEngine(tmp_path, import_module=no_module).load()


async def test_a_profile_goes_to_the_cloning_engine_through_the_service(f5_dir: Path) -> None:
    f5 = F5Engine(f5_dir, import_module=f5_modules)
    service = TTSService(
        ServiceConfig(fast_engine="f5", hq_engine="none", idle_unload_s=0),
        {"f5": f5, "espeak": EspeakEngine()},
    )
    await service.start()
    utt = await service.synthesize("Hello there. How are you?", reference=profile())
    assert (utt.engine, utt.voice, utt.notice) == ("f5", "f5:default", None)
    audio = await utt.read_all()
    assert audio.size == int(0.5 * 2 * 24000) + int(0.5 * 3 * 24000)  # one call per clause
    assert [c["gen_text"] for c in FakeF5.instances[-1].calls] == ["Hello there.", "How are you?"]
    # Korean is not an F5 language here: the fallback speaks it, and says the profile is not cloned.
    utt = await service.synthesize("안녕하세요.", reference=profile())
    assert utt.engine == "espeak"
    assert utt.notice is not None and "espeak cannot clone voices" in utt.notice
    await utt.aclose()
    await service.aclose()


def test_cosyvoice_follows_a_style_instruction_in_instruct_mode(tmp_path: Path) -> None:
    """CosyVoice 2 gets the instruction with its end-of-prompt marker and the 16 kHz prompt clip;
    CosyVoice 3 (prompt as a WAV path) also gets its system preamble; no instruction: zero-shot."""
    engine = CosyVoiceEngine(tmp_path, import_module=cosy_modules(auto=False))
    engine.load()
    model = FakeCosyVoice2.instances[-1]
    voice = engine.voices()[0]
    ref = profile()
    audio = np.concatenate(
        list(
            engine.synthesize("Hello.", voice, language="en", speed=1.0, reference=ref, instructions="Cheer.")
        )
    )
    ((text, style, prompt),) = model.instructed
    assert (text, style) == ("Hello.", "Cheer.<|endofprompt|>")
    assert tuple(prompt.shape) == (1, 48000) and audio.size == int(0.25 * 24000)
    assert model.prompts == []  # the instruct mode replaced the zero-shot call
    list(engine.synthesize("Hello.", voice, language="en", speed=1.0, reference=profile()))
    assert len(model.prompts) == 1 and len(model.instructed) == 1

    v3 = CosyVoiceEngine(tmp_path, import_module=cosy_modules(auto=True))
    v3.load()
    list(v3.synthesize("Hi.", voice, language="en", speed=1.0, reference=profile(), instructions="whisper"))
    assert FakeAutoModel.instances[-1].instructed == [
        ("Hi.", "You are a helpful assistant. whisper<|endofprompt|>", 16000)
    ]


async def test_instructions_reach_only_an_engine_that_follows_them(tmp_path: Path, f5_dir: Path) -> None:
    cosy = CosyVoiceEngine(tmp_path, import_module=cosy_modules(auto=False))
    f5 = F5Engine(f5_dir, import_module=f5_modules)
    service = TTSService(
        ServiceConfig(fast_engine="f5", hq_engine="cosyvoice", idle_unload_s=0, memory_budget_mb=1e6),
        {"f5": f5, "cosyvoice": cosy, "espeak": EspeakEngine()},
    )
    await service.start()
    utt = await service.synthesize(
        "Good news.", tier=Tier.HQ, reference=profile(), instructions="  Speak\n cheerfully. "
    )
    assert utt.engine == "cosyvoice", utt.notice
    await utt.read_all()
    model = FakeCosyVoice2.instances[-1]
    assert [style for _t, style, _p in model.instructed] == ["Speak cheerfully.<|endofprompt|>"]
    calls = len(FakeF5.instances[-1].calls) if FakeF5.instances else 0
    fast = await service.synthesize("Good news.", reference=profile(), instructions="Speak cheerfully.")
    assert fast.engine == "f5"
    await fast.read_all()  # F5 takes no instruction argument: a TypeError would fail the clause
    assert len(FakeF5.instances[-1].calls) == calls + 1
    with pytest.raises(InvalidTextError, match="at most 500"):
        await service.synthesize("Hi.", instructions="x" * 501)
    await service.aclose()
