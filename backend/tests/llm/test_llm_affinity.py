"""Session affinity over several identical model servers: sticky, least recently used for a new
session, a server that refused is passed over for a while and its sessions move."""

from __future__ import annotations

import uuid

import pytest

from avatar.infrastructure.llm_affinity import DOWN_FOR_S, IN_USE_FOR_S, SessionAffinity

URLS = ["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1", "http://127.0.0.1:3/v1/"]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_each_session_keeps_its_server_and_new_ones_take_the_least_recently_used() -> None:
    servers = SessionAffinity(URLS)
    a, b, c, d = (uuid.uuid4() for _ in range(4))
    first = [servers.url_for(key) for key in (a, b, c)]
    assert first == [u.rstrip("/") for u in URLS]  # three sessions, three servers
    for _ in range(3):
        assert [servers.url_for(key) for key in (c, a)] == [first[2], first[0]]
    # b's server is now the one used least recently: a fourth session takes it
    assert servers.url_for(d) == first[1]
    assert servers.server_of(d) == first[1] and servers.server_of(b) == first[1]


def test_requests_without_a_session_take_the_least_recently_used_server_and_own_nothing() -> None:
    servers = SessionAffinity(URLS)
    a = uuid.uuid4()
    assert servers.url_for(a) == URLS[0]
    assert servers.url_for(None) == URLS[1]
    assert servers.url_for(None) == URLS[2].rstrip("/")
    assert servers.url_for(a) == URLS[0]
    assert servers.url_for(None) == URLS[1]


def test_a_refusing_server_is_passed_over_until_it_recovers_or_its_time_is_up() -> None:
    clock = Clock()
    servers = SessionAffinity(URLS[:2], clock=clock)
    a, b = uuid.uuid4(), uuid.uuid4()
    url_a = servers.url_for(a)
    url_b = servers.url_for(b)
    assert servers.refused(url_a) is True  # another server is left
    assert servers.url_for(a) == url_b  # the session moves
    assert servers.url_for(uuid.uuid4()) == url_b  # new sessions avoid it too
    assert servers.refused(url_b) is False  # nothing left: callers fail as before
    clock.now += DOWN_FOR_S + 1
    assert servers.url_for(uuid.uuid4()) == url_a  # up again, and the least recently used
    servers.refused(url_a)
    assert servers.url_for(uuid.uuid4()) == url_b
    servers.recovered()  # its supervisor restarted it
    assert servers.url_for(uuid.uuid4()) == url_a


def test_one_server_needs_no_bookkeeping_and_memory_is_bounded() -> None:
    one = SessionAffinity(URLS[:1])
    assert one.url_for(uuid.uuid4()) == URLS[0] and one.server_of(uuid.uuid4()) is None
    servers = SessionAffinity(URLS, remember=10)
    keys = [uuid.uuid4() for _ in range(50)]
    for key in keys:
        servers.url_for(key)
    assert servers.server_of(keys[0]) is None and servers.server_of(keys[-1]) is not None
    with pytest.raises(ValueError):
        SessionAffinity([])


def test_more_servers_are_asked_for_only_when_every_started_one_is_taken() -> None:
    clock = Clock()
    asked: list[int] = []
    servers = SessionAffinity(URLS, active=1, on_demand=lambda: asked.append(1), clock=clock)
    assert servers.active == (URLS[0],)
    a, b = uuid.uuid4(), uuid.uuid4()
    assert servers.url_for(None) == URLS[0] and servers.url_for(a) == URLS[0]
    assert asked == []  # a request without a session claims nothing
    for _ in range(3):
        servers.url_for(a)
    assert asked == []  # one conversation: one server
    assert servers.url_for(b) == URLS[0]  # taken by a, but the only one started
    assert asked == [1]
    servers.activate()
    assert servers.active == tuple(URLS[:2])
    # b used the first server last: it stays there; a finds it taken and moves to the new one
    assert servers.url_for(b) == URLS[0]
    assert servers.url_for(a) == URLS[1]
    assert [servers.url_for(k) for k in (a, b, a, b)] == [URLS[1], URLS[0], URLS[1], URLS[0]]
    assert asked == [1]
    # a session that went quiet long ago does not hold its server: nothing more is asked for
    clock.now += IN_USE_FOR_S + 1
    assert servers.url_for(uuid.uuid4()) == URLS[1] and servers.url_for(b) == URLS[0]
    assert asked == [1]
