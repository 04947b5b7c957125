"""Ratings of replies (``POST /api/v1/turns/{id}/feedback``) and the fine-tuning export, over the
instant engine set (in-memory storage) behind a real uvicorn server."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from avatar.application.accounts import AccountService
from avatar.application.feedback import ExportFilter, FinetuneLine, export_finetune, rate
from avatar.bootstrap import build_instant_container
from avatar.domain.feedback import Rating
from avatar.domain.models import ConversationTurn, Emotion, Role, Session, new_id
from avatar.infrastructure.instant import InMemoryDatabase
from avatar.infrastructure.llm import approximate_tokens
from avatar.infrastructure.secrets import live_keys
from avatar.presentation.app import create_app
from avatar.settings import Settings
from tests.e2e.harness import create_session, running_server, server_key

T0 = datetime(2026, 11, 1, tzinfo=UTC)


async def _turns(
    db: InMemoryDatabase, session: Session, pairs: list[tuple[str, str]]
) -> list[ConversationTurn]:
    turns = [
        ConversationTurn(
            turn_id=new_id(),
            session_id=session.session_id,
            turn_number=i,
            user_input=user,
            ai_response=reply,
            emotion=Emotion.HAPPY,
            created_at=T0,
        )
        for i, (user, reply) in enumerate(pairs, 1)
    ]
    async with db() as tx:
        if await tx.sessions.get(session.session_id) is None:
            await tx.sessions.add(session)
        for turn in turns:
            await tx.turns.add(turn)
        await tx.commit()
    return turns


async def test_rating_a_turn_needs_its_session_token(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, environment="test")
    settings.data_dir = tmp_path
    container = build_instant_container(settings)
    db = container.uow
    assert isinstance(db, InMemoryDatabase)
    async with (
        running_server(create_app(settings, container)) as base,
        httpx.AsyncClient(base_url=base) as http,
    ):
        mine = await create_session(base)
        other = await create_session(base)
        async with db() as tx:
            session = await tx.sessions.get(uuid.UUID(mine["session_id"]))
        assert session is not None
        (turn,) = await _turns(db, session, [("hello", "[happy] Hi there!")])
        url = f"/api/v1/turns/{turn.turn_id}/feedback"
        auth = {"Authorization": f"Bearer {mine['token']}"}

        assert (await http.post(url, json={"rating": "up"})).status_code == 401
        wrong = await http.post(
            url, json={"rating": "up"}, headers={"Authorization": f"Bearer {other['token']}"}
        )
        assert wrong.status_code == 403
        assert (await http.post(url, json={"rating": "meh"}, headers=auth)).status_code == 422
        too_long = await http.post(url, json={"rating": "up", "comment": "x" * 2001}, headers=auth)
        assert too_long.status_code == 422
        bad_id = await http.post("/api/v1/turns/not-a-uuid/feedback", json={"rating": "up"}, headers=auth)
        assert bad_id.status_code == 422 and "turn id" in bad_id.text
        unknown = await http.post(
            f"/api/v1/turns/{uuid.uuid4()}/feedback", json={"rating": "up"}, headers=auth
        )
        assert unknown.status_code == 404

        ok = await http.post(url, json={"rating": "down", "comment": " 너무 짧아요 "}, headers=auth)
        assert (
            ok.status_code == 200 and ok.json()["rating"] == "down" and ok.json()["comment"] == "너무 짧아요"
        )
        # the session's owner signed in with an API key may rate it; another user sees no such turn
        owner = {"Authorization": f"Bearer {await server_key(base)}"}
        assert (await http.post(url, json={"rating": "down"}, headers=owner)).status_code == 200
        _stranger, stranger_key = await AccountService(container.uow, container.clock).create_user("x")
        stranger = {"Authorization": f"Bearer {stranger_key}"}
        assert (await http.post(url, json={"rating": "up"}, headers=stranger)).status_code == 404
        again = await http.post(url, json={"rating": "up"}, headers=auth)
        assert again.json()["rating"] == "up"
    async with db() as tx:
        stored = await tx.feedback.get(turn.turn_id)
    assert stored is not None and stored.rating is Rating.UP and stored.comment == ""


async def test_a_live_turn_is_rated_with_the_operator_key(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, environment="test")
    settings.data_dir = tmp_path
    settings.live.twitch.channel = "host"
    settings.live.twitch.url = "irc://127.0.0.1:9"  # never connects; the stage is not needed here
    container = build_instant_container(settings)
    db = container.uow
    assert isinstance(db, InMemoryDatabase)
    live_session = Session.start(T0, {"source": "live"})
    (turn,) = await _turns(db, live_session, [("[twitch live chat; viewer Amy] Amy: hi", "Hi Amy!")])
    async with (
        running_server(create_app(settings, container)) as base,
        httpx.AsyncClient(base_url=base) as http,
    ):
        read, operator = live_keys(settings)
        url = f"/api/v1/turns/{turn.turn_id}/feedback"
        refused = await http.post(url, json={"rating": "up"}, headers={"Authorization": f"Bearer {read}"})
        assert refused.status_code == 403
        ok = await http.post(url, json={"rating": "up"}, headers={"Authorization": f"Bearer {operator}"})
        assert ok.status_code == 200


async def test_export_builds_chat_lines_within_the_window_and_sets_bad_ones_aside() -> None:
    db = InMemoryDatabase()
    talk = Session.start(T0, {})
    turns = await _turns(
        db,
        talk,
        [
            ("Hi! Who are you?", "[happy] I am AVATAR."),
            ("오늘 날씨 어때?", "[neutral] 맑아요."),
            ("你好吗", "[happy] 我很好谢谢"),
            ("Say nothing", ""),
        ],
    )
    live = Session.start(T0, {"source": "live"})
    (live_turn,) = await _turns(db, live, [("Amy: hello", "Hi Amy!")])
    await rate(db, turns[2].turn_id, Rating.UP, "좋아요", T0)
    await rate(db, turns[0].turn_id, Rating.DOWN, "", T0 + timedelta(minutes=1))
    await rate(db, turns[3].turn_id, Rating.UP, "", T0 + timedelta(minutes=2))
    await rate(db, live_turn.turn_id, Rating.UP, "", T0 + timedelta(minutes=3))

    def run(flt: ExportFilter, context: int = 4096, max_line: int = 4096):  # type: ignore[no-untyped-def]
        return export_finetune(
            db,
            "You are AVATAR.",
            flt,
            count_tokens=approximate_tokens,
            context_tokens=context,
            max_line_tokens=max_line,
        )

    result = await run(ExportFilter(rating=Rating.UP))
    assert [r.turn_id for r in result.rejected] == [turns[3].turn_id]
    assert "empty" in result.rejected[0].reason
    first, second = result.lines
    roles = [m.role for m in first.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert first.messages[0].content == "You are AVATAR."
    assert first.messages[-1].content == "我很好谢谢"  # markup stripped, Chinese kept
    assert first.messages[2].content == "I am AVATAR."
    assert second.messages[-2].content == "Amy: hello"

    # JSONL round trip, UTF-8 as is.
    text = "\n".join(line.model_dump_json() for line in result.lines)
    assert "我很好" in text and "\\u" not in text
    parsed = [FinetuneLine.model_validate(json.loads(raw)) for raw in text.splitlines()]
    assert parsed == result.lines

    # Filters: source, rating, dates; a small window keeps only the latest earlier turns.
    assert len((await run(ExportFilter(rating=Rating.UP, source="live"))).lines) == 1
    assert len((await run(ExportFilter(rating=Rating.UP, source="conversation"))).lines) == 1
    down = await run(ExportFilter(rating=Rating.DOWN))
    assert [len(line.messages) for line in down.lines] == [3]
    assert (await run(ExportFilter(rating=None, since=T0 + timedelta(minutes=3)))).lines == [second]
    assert (await run(ExportFilter(rating=None, until=T0 + timedelta(seconds=1)))).lines == [first]
    narrow = await run(ExportFilter(rating=Rating.UP, source="conversation"), context=60)
    assert [m.content for m in narrow.lines[0].messages[1:3]] == ["오늘 날씨 어때?", "맑아요."]
    tight = await run(ExportFilter(rating=Rating.UP, source="conversation"), max_line=10)
    assert tight.lines == [] and "over the limit of 10" in tight.rejected[0].reason


async def test_the_admin_downloads_the_export_with_its_validation(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, environment="test")
    settings.data_dir = tmp_path
    container = build_instant_container(settings)
    db = container.uow
    assert isinstance(db, InMemoryDatabase)
    talk = Session.start(T0, {})
    turns = await _turns(db, talk, [("오늘 날씨 어때?", "[neutral] 맑아요."), ("Say nothing", "")])
    live = Session.start(T0, {"source": "live"})
    (live_turn,) = await _turns(db, live, [("Amy: hello", "[happy] Hi Amy!")])
    await rate(db, turns[0].turn_id, Rating.UP, "", T0)
    await rate(db, turns[1].turn_id, Rating.UP, "", T0 + timedelta(minutes=1))
    await rate(db, live_turn.turn_id, Rating.DOWN, "", T0 + timedelta(minutes=2))
    accounts = AccountService(container.uow, container.clock)
    _admin, admin_key = await accounts.create_user("boss", role=Role.ADMIN)
    _user, user_key = await accounts.create_user("someone")
    async with (
        running_server(create_app(settings, container)) as base,
        httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {admin_key}"}) as http,
    ):
        url = "/api/v1/admin/export/finetune"
        got = await http.get(url)
        assert got.status_code == 200 and got.headers["content-type"].startswith("application/jsonl")
        assert (got.headers["x-export-lines"], got.headers["x-export-rejected"]) == ("1", "1")
        assert "맑아요" in got.text and "\\u" not in got.text  # UTF-8 as is
        (line,) = [FinetuneLine.model_validate(json.loads(raw)) for raw in got.text.splitlines()]
        assert [m.content for m in line.messages[-2:]] == ["오늘 날씨 어때?", "맑아요."]
        check = (await http.get(f"{url}/validation")).json()
        assert check["lines"] == 1
        assert check["rejected"] == [{"turn_id": str(turns[1].turn_id), "reason": "an empty message"}]

        # The filters of `avatar export finetune`.
        live_down = await http.get(url, params={"rating": "down", "source": "live"})
        assert [json.loads(raw)["messages"][-1]["content"] for raw in live_down.text.splitlines()] == [
            "Hi Amy!"
        ]
        assert (await http.get(url, params={"source": "live"})).text == ""
        later = await http.get(url, params={"rating": "all", "since": "2026-11-01T00:01:30"})
        assert later.headers["x-export-lines"] == "1" and "Hi Amy!" in later.text
        early = await http.get(url, params={"rating": "all", "until": "2026-11-01T00:00:30+00:00"})
        assert early.headers["x-export-lines"] == "1" and "맑아요" in early.text
        for bad in ({"rating": "meh"}, {"source": "tv"}, {"since": "yesterday"}, {"max_line_tokens": "0"}):
            assert (await http.get(url, params=bad)).status_code == 422, bad

        # Only an admin.
        for path in (url, f"{url}/validation"):
            assert (await http.get(path, headers={"Authorization": f"Bearer {user_key}"})).status_code == 403
            async with httpx.AsyncClient(base_url=base) as nobody:
                assert (await nobody.get(path)).status_code == 401
