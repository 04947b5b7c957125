"""The chat sources ``settings.live`` asks for (one per configured platform)."""

from __future__ import annotations

from avatar.application.ports.chat import ChatSource
from avatar.infrastructure.live.chzzk import ChzzkChat
from avatar.infrastructure.live.twitch import TwitchChat
from avatar.settings import Settings


def build_chat_sources(settings: Settings) -> list[ChatSource]:
    live = settings.live
    sources: list[ChatSource] = []
    if live.twitch.channel:
        sources.append(TwitchChat(live.twitch.channel, live.twitch.url))
    chzzk = live.chzzk
    if chzzk.channel_id and chzzk.client_id and chzzk.client_secret:
        sources.append(
            ChzzkChat(
                chzzk.channel_id,
                chzzk.client_id,
                chzzk.client_secret.get_secret_value(),
                chzzk.api_url,
                access_token=chzzk.access_token.get_secret_value() if chzzk.access_token else None,
                refresh_token=chzzk.refresh_token.get_secret_value() if chzzk.refresh_token else None,
            )
        )
    return sources
