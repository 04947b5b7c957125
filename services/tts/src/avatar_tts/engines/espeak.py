"""espeak-ng as a subprocess: formant synthesis for any language it knows, the embedded fallback."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

from avatar_common.audio import decode_audio
from avatar_tts.engine import FloatAudio, Reference, Tier, Voice, normalize_language
from avatar_tts.errors import EngineUnavailableError

#: espeak-ng voice per language for the languages the product speaks first.
PREFERRED = {"en": "en-us", "ko": "ko", "zh": "cmn", "ja": "ja"}


class EspeakEngine:
    """Runs ``espeak-ng --stdout`` per chunk (about 10 ms); nothing stays resident."""

    name = "espeak"
    tier = Tier.FAST
    can_clone = False
    estimate_mb = 0.0
    sample_rate = 22050

    def __init__(self, binary: str = "espeak-ng") -> None:
        self._binary = binary
        self._voices: list[Voice] | None = None

    def _path(self) -> str:
        path = shutil.which(self._binary)
        if path is None:
            raise EngineUnavailableError(f"{self._binary} is not installed (apt-get install espeak-ng)")
        return path

    def voices(self) -> list[Voice]:
        if self._voices is None:
            try:
                out = subprocess.run(
                    [self._path(), "--voices"], capture_output=True, text=True, check=True, timeout=10
                ).stdout
            except (EngineUnavailableError, subprocess.SubprocessError, OSError):
                out = ""
            names: dict[str, str] = {}
            for line in out.splitlines()[1:]:
                parts = line.split()
                if len(parts) >= 5:
                    names.setdefault(parts[1], normalize_language(parts[1]))
            for lang, name in PREFERRED.items():
                names.setdefault(name, lang)
            self._voices = [
                Voice(f"espeak:{name}", name, self.name, (lang,), self.tier)
                for name, lang in sorted(names.items())
            ]
        return self._voices

    def voice_for(self, language: str) -> Voice | None:
        preferred = PREFERRED.get(language)
        candidates = [v for v in self.voices() if language in v.languages]
        for v in candidates:
            if v.name == preferred:
                return v
        return candidates[0] if candidates else None

    def load(self) -> None:
        self._path()

    def unload(self) -> None:
        return None

    def synthesize(
        self, text: str, voice: Voice, *, language: str, speed: float, reference: Reference | None = None
    ) -> Iterator[FloatAudio]:
        wpm = max(80, min(450, round(175 * speed)))
        # Text goes through stdin, never the command line (no option injection).
        proc = subprocess.run(
            [self._path(), "-v", voice.name, "-s", str(wpm), "-b", "1", "--stdout"],
            input=text.encode("utf-8"),
            capture_output=True,
            timeout=60,
            check=False,
        )
        if proc.returncode != 0 or not proc.stdout:
            raise EngineUnavailableError(f"espeak-ng failed: {proc.stderr.decode(errors='replace').strip()}")
        decoded = decode_audio(proc.stdout)
        yield decoded.samples
