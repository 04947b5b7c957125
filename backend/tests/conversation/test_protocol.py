"""docs/protocol.md, the protocol models (application/conversation/events.py) and the web app's
generated TypeScript types (frontend/src/protocol/generated.ts) must say the same thing."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from avatar.application.conversation.events import (
    CLIENT_MODELS,
    CLIENT_TYPES,
    SERVER_MESSAGE,
    SERVER_MODELS,
    AudioChunkMsg,
    message_type,
    protocol_json_schema,
)
from avatar.cli import main
from avatar.domain.models import TTSMode
from avatar.presentation.wire import encode, to_wire

ROOT = Path(__file__).resolve().parents[3]
DOCS = ROOT / "docs" / "protocol.md"
FRONTEND = ROOT / "frontend"
SCHEMA = FRONTEND / "src" / "protocol" / "protocol.schema.json"
GENERATED = FRONTEND / "src" / "protocol" / "generated.ts"
APPLICATION = ROOT / "backend" / "src" / "avatar" / "application"


def _table(section: str) -> dict[str, set[str]]:
    """The message table under ``## {section}``: type -> the fields its row names."""
    text = DOCS.read_text(encoding="utf-8")
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, set[str]] = {}
    for line in body.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        # values in parentheses or braces (`fast`|`hq`, {`confidence`, ...}) are not fields
        fields = re.sub(r"\([^)]*\)|\{[^}]*\}", "", cells[1])
        rows[cells[0].strip("`")] = {m.split(":")[0] for m in re.findall(r"`([^`]+)`", fields)}
    return rows


def _fields(model: type) -> set[str]:
    return set(model.model_fields) - {"type"}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("section", "models"), [("Client -> server", CLIENT_MODELS), ("Server -> client", SERVER_MODELS)]
)
def test_every_documented_message_has_a_model_with_the_documented_fields(
    section: str, models: tuple[type, ...]
) -> None:
    documented = _table(section)
    modelled = {message_type(m): _fields(m) for m in models}
    assert set(documented) == set(modelled), "docs/protocol.md and events.py list different messages"
    for kind, fields in documented.items():
        assert fields == modelled[kind], (
            f"{kind}: docs name {sorted(fields)}, the model {sorted(modelled[kind])}"
        )


def test_every_notice_code_the_backend_sends_is_documented() -> None:
    notice_row = next(
        line for line in DOCS.read_text(encoding="utf-8").splitlines() if line.startswith("| `notice`")
    )
    sources = "\n".join(p.read_text(encoding="utf-8") for p in APPLICATION.rglob("*.py"))
    codes = set(re.findall(r'NoticeMsg\(\s*code="([A-Z_]+)"', sources))
    codes |= set(re.findall(r'notice\(\s*"([A-Z_]+)"', sources))
    codes |= set(re.findall(r'^[A-Z_]+ = "([A-Z_]+)"$', sources, flags=re.MULTILINE)) & {"AUDIO_SHED"}
    assert {"EMPTY_REPLY", "LLM_UNAVAILABLE", "AUDIO_SHED", "NO_SPEECH", "HQ_UNAVAILABLE"} <= codes
    missing = sorted(c for c in codes if f"`{c}`" not in notice_row)
    assert not missing, f"notice codes sent but not in docs/protocol.md: {missing}"


def test_client_types_are_the_client_models() -> None:
    assert {message_type(m) for m in CLIENT_MODELS} == CLIENT_TYPES


def test_the_committed_schema_is_the_models_schema() -> None:
    committed = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert committed == protocol_json_schema(), "stale protocol.schema.json: run `make protocol`"


def test_the_generated_typescript_is_what_the_schema_generates(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None or not (FRONTEND / "node_modules" / "json-schema-to-typescript").exists():
        pytest.skip("node and the web app's dev dependencies (npm ci in frontend/) are needed")
    schema = tmp_path / "protocol.schema.json"
    schema.write_text(json.dumps(protocol_json_schema()), encoding="utf-8")
    out = subprocess.run(
        [node, "scripts/gen-protocol.mjs", str(schema), "--stdout"],
        cwd=FRONTEND,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stdout == GENERATED.read_text(encoding="utf-8"), "stale generated.ts: run `make protocol`"
    for model in (*SERVER_MODELS, *CLIENT_MODELS):
        assert f"export interface {model.__name__} {{" in out.stdout


def test_the_serializer_writes_audio_as_standard_base64_and_reads_back() -> None:
    pcm = bytes(range(256)) * 3  # bytes that url-safe base64 would spell differently
    message = AudioChunkMsg(
        turn_id=uuid.uuid4(), data=pcm, sr=16000, mode=TTSMode.FAST, seq=0, duration_ms=24.0, text="x"
    )
    wire = json.loads(encode(message))
    assert wire == to_wire(message) and wire["type"] == "audio_chunk"
    assert base64.b64decode(wire["data"], validate=True) == pcm
    assert SERVER_MESSAGE.validate_python({**wire, "data": pcm}) == message


def test_the_cli_prints_the_committed_schema(tmp_path: Path) -> None:
    out = CliRunner().invoke(main, ["protocol", "schema"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == json.loads(SCHEMA.read_text(encoding="utf-8"))
    target = tmp_path / "schema.json"
    assert CliRunner().invoke(main, ["protocol", "schema", "-o", str(target)]).exit_code == 0
    assert target.read_text(encoding="utf-8") == SCHEMA.read_text(encoding="utf-8")
