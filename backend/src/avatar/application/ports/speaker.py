"""Speaker encoder port: a voice clip in, a 256-dim speaker embedding out."""

from __future__ import annotations

from typing import Protocol


class SpeakerEncoder(Protocol):
    @property
    def dim(self) -> int: ...

    async def embed(self, pcm: bytes, sample_rate: int) -> tuple[float, ...]:
        """L2-normalized embedding of the speaker in a PCM16 mono clip."""
        ...
