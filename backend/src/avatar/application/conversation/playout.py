"""What the listener has heard of a reply: pure arithmetic over the clauses sent and the time.

A reply is spoken clause by clause; each clause's audio is sent as it is synthesized. On barge-in
the turn keeps only what was heard: the client may say so (``heard_text``) or how much it played
(``played_ms``); otherwise real-time playback since the first chunk is assumed, never counting a
clause that was not fully sent. No I/O and no clock of its own: times are passed in (seconds of a
monotonic clock).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Clause:
    """One speakable clause of a reply and how much of its audio was sent."""

    text: str
    duration_ms: float = 0.0
    complete: bool = False


@dataclass
class Playout:
    """The audio timeline of one reply."""

    clauses: list[Clause] = field(default_factory=list)
    #: Monotonic time the first chunk was handed to the connection (``None``: nothing sent yet).
    first_audio_at: float | None = None
    audio_ms: float = 0.0

    def start_clause(self, text: str) -> Clause:
        clause = Clause(text)
        self.clauses.append(clause)
        return clause

    def sent(self, clause: Clause, duration_ms: float, now: float) -> bool:
        """Record a chunk of ``clause`` handed to the connection; ``True`` for the reply's first."""
        first = self.first_audio_at is None
        if first:
            self.first_audio_at = now
        clause.duration_ms += duration_ms
        self.audio_ms += duration_ms
        return first

    @property
    def started(self) -> bool:
        return self.first_audio_at is not None

    def elapsed_ms(self, now: float) -> float:
        """Playback time since the first chunk, assuming real-time playback."""
        if self.first_audio_at is None:
            return 0.0
        return (now - self.first_audio_at) * 1000.0

    def left_ms(self, now: float) -> float:
        """Audio sent but (at real-time playback) not yet played; ``<= 0`` when playback is over."""
        if self.first_audio_at is None:
            return 0.0
        return self.audio_ms - self.elapsed_ms(now)

    def heard_text(self, now: float, heard_text: str | None = None, played_ms: float | None = None) -> str:
        """What the listener heard: the client's word if given, else the fully sent clauses that fit
        in ``played_ms`` (default: real-time playback since the first chunk)."""
        if heard_text is not None:
            return heard_text.strip()
        if played_ms is None:
            if self.first_audio_at is None:
                return ""
            played_ms = self.elapsed_ms(now)
        heard: list[str] = []
        position = 0.0
        for clause in self.clauses:
            position += clause.duration_ms
            if not clause.complete or position > played_ms + 1.0:
                break
            heard.append(clause.text.strip())
        return " ".join(heard)
