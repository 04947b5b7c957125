"""Session-scoped llama.cpp OpenAI-compatible server with the packaged SmolLM2 model."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from avatar.settings import Settings


@pytest.fixture(scope="session")
async def llama_server() -> AsyncIterator[str]:
    """Start ``python -m llama_cpp.server`` with SmolLM2-135M on a free port once per run.

    Yields the base URL (``http://127.0.0.1:PORT/v1``); the server is stopped by PID at the end.
    """
    from avatar.infrastructure.llama_server import start_llama_server, stop_llama_server
    from avatar.infrastructure.llm import embedded_model_path

    settings = Settings()
    server = await start_llama_server(embedded_model_path(settings), n_ctx=2048, alias=settings.llm.model)
    try:
        yield server.base_url
    finally:
        await stop_llama_server(server)
