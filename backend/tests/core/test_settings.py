"""Settings: nested groups from env vars and .env, and default secrets refused outside development."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from pydantic import ValidationError

from avatar.application.brain import HistoryFold
from avatar.bootstrap import brain_config
from avatar.settings import Environment, Placement, Settings


def test_defaults_are_the_embedded_placement(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("AVATAR_"):
            monkeypatch.delenv(key)
    s = Settings(_env_file=None)
    assert s.environment is Environment.DEVELOPMENT
    assert s.asr.placement is Placement.EMBEDDED and s.llm.placement is Placement.EMBEDDED
    assert s.database.placement is Placement.EMBEDDED
    assert s.object_store.kind == "filesystem" and s.queue.kind == "inprocess"
    assert (s.server.port, s.tts.fast_port, s.tts.hq_port, s.asr.port, s.prosody.port) == (
        8000,
        8002,
        8003,
        8004,
        8005,
    )
    # 8001 is VTube Studio's API port; the embedded LLM server must not take it (issue 18).
    assert s.llm.port == 8006 and s.llm.base_url == "http://127.0.0.1:8006/v1"


def test_nested_env_vars_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVATAR_LLM__BASE_URL", "http://vllm:8006/v1")
    monkeypatch.setenv("AVATAR_LLM__PLACEMENT", "remote")
    monkeypatch.setenv("AVATAR_CONVERSATION__MAX_SESSIONS", "3")
    s = Settings(_env_file=None)
    assert s.llm.base_url == "http://vllm:8006/v1"
    assert s.llm.placement is Placement.REMOTE
    assert s.conversation.max_sessions == 3


def test_dotenv_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = tmp_path / ".env"
    env.write_text("AVATAR_ASR__LANGUAGE=ko\nAVATAR_QUEUE__KIND=redis\n")
    s = Settings(_env_file=env)
    assert s.asr.language == "ko" and s.queue.kind == "redis"


MASTER = base64.b64encode(bytes(range(32))).decode()


def test_production_refuses_default_secrets() -> None:
    with pytest.raises(ValidationError, match="AVATAR_SECURITY__SECRET_KEY"):
        Settings(_env_file=None, environment="production")


def test_production_refuses_default_s3_secret() -> None:
    with pytest.raises(ValidationError, match="AVATAR_OBJECT_STORE__SECRET_KEY"):
        Settings(
            _env_file=None,
            environment="production",
            security={
                "secret_key": "a-real-secret-of-32-characters!!",
                "master_key": MASTER,
                "service_key": "a-service-key-of-32-characters!!",
            },
            object_store={"kind": "s3"},
        )


def test_production_accepts_real_secrets() -> None:
    s = Settings(
        _env_file=None,
        environment="production",
        security={
            "secret_key": "a-real-secret-of-32-characters!!",
            "master_key": MASTER,
            "service_key": "a-service-key-of-32-characters!!",
        },
        object_store={"kind": "s3", "secret_key": "another-secret"},
    )
    assert s.environment is Environment.PRODUCTION


def test_invalid_values_are_rejected() -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, asr={"placement": "somewhere"})


def test_public_url() -> None:
    s = Settings(_env_file=None, server={"host": "0.0.0.0", "port": 9000})
    assert s.public_base_url() == "http://0.0.0.0:9000"
    s = Settings(_env_file=None, server={"public_url": "https://avatar.example/"})
    assert s.public_base_url() == "https://avatar.example"


def test_the_load_testing_engines_are_refused_in_production() -> None:
    with pytest.raises(ValueError, match="load-testing engine set"):
        Settings(_env_file=None, environment="production", engines="instant")
    assert Settings(_env_file=None, environment="test", engines="instant").engines == "instant"


def test_the_history_window_follows_the_placement() -> None:
    """The embedded model gets a short history it drops (a CPU pays for every cached token and the
    packaged model cannot summarize); a remote model keeps a long one it summarizes; either can be
    set, and a window that would fold before it keeps anything is refused."""
    embedded = brain_config(Settings(_env_file=None))
    assert (embedded.fold, embedded.history_keep_tokens, embedded.summarize_at_tokens) == (
        HistoryFold.DROP,
        300,
        900,
    )
    remote = brain_config(Settings(_env_file=None, llm={"placement": "remote"}))
    assert (remote.fold, remote.history_keep_tokens, remote.summarize_at_tokens) == (
        HistoryFold.SUMMARIZE,
        5000,
        7000,
    )
    assert (embedded.memory_max_tokens, remote.memory_max_tokens) == (64, 0)
    chosen = brain_config(Settings(_env_file=None, llm={"history_fold": "summarize"}))
    assert chosen.fold is HistoryFold.SUMMARIZE and chosen.summarize_at_tokens == 900
    with pytest.raises(ValidationError, match="embedded_history_keep_tokens must be below"):
        Settings(_env_file=None, llm={"embedded_history_keep_tokens": 900})
    with pytest.raises(ValidationError, match="history_keep_tokens must be below"):
        Settings(_env_file=None, llm={"history_keep_tokens": 8000})
