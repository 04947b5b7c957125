"""The avatar's character: loaded from an editable TOML file (``config/persona.toml``)."""

from __future__ import annotations

import tomllib
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from avatar.domain.errors import InvalidInputError
from avatar.domain.models import Emotion

_LANGUAGE_NAMES = {"ko": "Korean", "ja": "Japanese", "zh": "Chinese", "ru": "Russian", "en": "English"}


@dataclass(frozen=True, slots=True)
class PersonaExample:
    """One example exchange shown to the model; the reply starts with an emotion tag."""

    user: str
    assistant: str


@dataclass(frozen=True, slots=True)
class Persona:
    """System prompt and character sheet, kept for every turn of every session.

    Attributes:
        name: The avatar's name.
        system_prompt: Who the avatar is and how it speaks.
        character: Character sheet lines (likes, background, speaking style).
        rules: Hard rules appended to the system prompt.
        examples: Example exchanges that teach the emotion-tag format.
        fallback_replies: What to say when the model is unavailable, by language code
            (``en`` is required); each starts with an emotion tag.
    """

    name: str
    system_prompt: str
    character: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    examples: tuple[PersonaExample, ...] = ()
    fallback_replies: dict[str, str] = field(default_factory=dict)

    def fallback_reply(self, language: str | None) -> str:
        return self.fallback_replies.get(language or "en") or self.fallback_replies["en"]

    def system_message(self) -> str:
        emotions = ", ".join(f"[{e.value}]" for e in Emotion)
        parts = [self.system_prompt.strip()]
        if self.character:
            parts.append("Character sheet:\n" + "\n".join(f"- {line}" for line in self.character))
        rules = [
            f"Begin every reply with exactly one emotion tag from {emotions}, then the reply itself.",
            "Reply in the same language the user writes in.",
            "Keep replies short and conversational: they are spoken aloud.",
            *self.rules,
        ]
        parts.append("Rules:\n" + "\n".join(f"- {rule}" for rule in rules))
        return "\n\n".join(parts)


def _strings(raw: object, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise InvalidInputError(f"persona: {where} must be a list of strings")
    return tuple(raw)


def parse_persona(text: str, source: str = "persona.toml") -> Persona:
    """Parse a persona TOML document.

    Raises:
        InvalidInputError: the document is not TOML or lacks a required field; the message
            names the file and the field.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInputError(f"{source}: not valid TOML: {exc}") from exc
    persona = data.get("persona")
    if not isinstance(persona, dict):
        raise InvalidInputError(f"{source}: missing the [persona] table")
    name = persona.get("name")
    prompt = persona.get("system_prompt")
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError(f"{source}: persona.name must be a non-empty string")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidInputError(f"{source}: persona.system_prompt must be a non-empty string")
    examples = []
    for i, ex in enumerate(data.get("examples", [])):
        if (
            not isinstance(ex, dict)
            or not isinstance(ex.get("user"), str)
            or not isinstance(ex.get("assistant"), str)
        ):
            raise InvalidInputError(f"{source}: examples[{i}] needs string fields user and assistant")
        if not ex["assistant"].lstrip().startswith("["):
            raise InvalidInputError(f"{source}: examples[{i}].assistant must start with an emotion tag")
        examples.append(PersonaExample(ex["user"], ex["assistant"]))
    fallback = data.get("fallback", {})
    if not isinstance(fallback, dict) or not all(isinstance(v, str) for v in fallback.values()):
        raise InvalidInputError(f"{source}: [fallback] must map language codes to strings")
    if "en" not in fallback:
        fallback = {**fallback, "en": "[sad] Sorry, I can't think clearly right now. Please try again soon."}
    return Persona(
        name=name.strip(),
        system_prompt=prompt,
        character=_strings(persona.get("character", []), "persona.character"),
        rules=_strings(persona.get("rules", []), "persona.rules"),
        examples=tuple(examples),
        fallback_replies=dict(fallback),
    )


def load_persona(path: Path) -> Persona:
    """Read and parse the persona file.

    Raises:
        InvalidInputError: the file is missing or invalid.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(
            f"persona file {path} cannot be read ({exc.strerror}); set AVATAR_LLM__PERSONA_FILE"
        ) from exc
    return parse_persona(text, str(path))


def detect_language(text: str) -> str | None:
    """The script-level language of ``text``: ko, ja, zh, ru, en, or None when unclear."""
    counts = {"ko": 0, "ja": 0, "zh": 0, "ru": 0, "latin": 0}
    for ch in text:
        if not ch.isalpha():
            continue
        name = unicodedata.name(ch, "")
        if name.startswith("HANGUL"):
            counts["ko"] += 1
        elif name.startswith(("HIRAGANA", "KATAKANA")):
            counts["ja"] += 1
        elif name.startswith("CJK"):
            counts["zh"] += 1
        elif name.startswith("CYRILLIC"):
            counts["ru"] += 1
        elif name.startswith("LATIN"):
            counts["latin"] += 1
    if counts["ja"]:
        return "ja"  # Japanese mixes kana with kanji
    best = max(counts, key=lambda k: counts[k])
    if counts[best] == 0:
        return None
    if best != "latin":
        return best
    # English when every letter is ASCII; punctuation does not count (ellipses, curly quotes and
    # dashes are common in transcripts, and a language flip rewrites the system message, so the model
    # server computes the whole conversation again: docs/adr/0014-voice-latency.md, tenth round).
    return "en" if all(ch.isascii() for ch in text if ch.isalpha()) else None


def language_name(code: str | None) -> str | None:
    return _LANGUAGE_NAMES.get(code or "")
