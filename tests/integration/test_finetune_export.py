"""``avatar export finetune`` as a user runs it (a subprocess of the installed entry point) against
a real PostgreSQL holding rated turns, sealed at rest: the JSONL parses, round-trips and keeps
Korean and Chinese as UTF-8; rejected lines are reported (docs/live.md, "Feedback")."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from avatar.application.feedback import FinetuneLine, rate
from avatar.domain.feedback import Rating
from avatar.domain.models import ConversationTurn, Emotion, Session, new_id
from avatar.infrastructure.database import build_unit_of_work_factory
from avatar.infrastructure.secrets import load_keyring
from avatar.settings import Placement, Settings
from tests.support.auth import seed_owner

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _avatar(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).parent / "avatar")
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=300
    )


async def test_export_finetune_command(tmp_path: Path, module_database_url: str) -> None:
    env = {
        "AVATAR_ENVIRONMENT": "test",
        "AVATAR_DATA_DIR": str(tmp_path),
        "AVATAR_DATABASE__PLACEMENT": "remote",
        "AVATAR_DATABASE__URL": module_database_url,
    }
    settings = Settings(_env_file=None, environment="test", data_dir=tmp_path)
    settings.database.placement = Placement.REMOTE
    settings.database.url = settings.database.url.__class__(module_database_url)
    session = Session.start(T0, {})
    pairs = [
        ("안녕! 너는 누구야?", "[happy] 나는 AVATAR야."),
        ("你好吗", "[happy] 我很好谢谢"),
        ("quiet", ""),
    ]
    turns = [
        ConversationTurn(new_id(), session.session_id, i, user, reply, Emotion.HAPPY, created_at=T0)
        for i, (user, reply) in enumerate(pairs, 1)
    ]
    async with contextlib.AsyncExitStack() as stack:
        uow = await build_unit_of_work_factory(settings, stack, load_keyring(settings))
        session = dataclasses.replace(session, owner_id=await seed_owner(uow))
        async with uow() as tx:
            await tx.sessions.add(session)
            for turn in turns:
                await tx.turns.add(turn)
            await tx.commit()
        await rate(uow, turns[1].turn_id, Rating.UP, "좋아요", T0)
        await rate(uow, turns[2].turn_id, Rating.UP, "", T0)

    out = tmp_path / "export" / "finetune.jsonl"
    done = _avatar(env, "export", "finetune", "--out", str(out), "--source", "conversation")
    assert done.returncode == 0, done.stderr
    assert "wrote 1 line(s)" in done.stdout
    assert f"set aside: turn {turns[2].turn_id}: an empty message" in done.stderr
    raw = out.read_text(encoding="utf-8")
    assert "我很好谢谢" in raw and "안녕! 너는 누구야?" in raw  # UTF-8, not \\u escapes
    (line,) = [FinetuneLine.model_validate(json.loads(text)) for text in raw.splitlines()]
    assert [m.role for m in line.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert line.messages[2].content == "나는 AVATAR야." and line.messages[-1].content == "我很好谢谢"
    assert line.model_dump_json() == raw.strip()

    none = _avatar(env, "export", "finetune", "--out", str(out), "--rating", "down")
    assert none.returncode == 0 and "wrote 0 line(s)" in none.stdout
    bad = _avatar(env, "export", "finetune", "--out", str(out), "--since", "yesterday")
    assert bad.returncode == 2 and "not an ISO date" in bad.stderr
