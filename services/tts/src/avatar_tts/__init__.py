"""AVATAR streaming TTS service: a fast tier that streams at once and an on-demand HQ tier.

Engines (one module each under :mod:`avatar_tts.engines`) satisfy :class:`avatar_tts.engine.Engine`;
:class:`avatar_tts.service.TTSService` validates requests, chunks text, picks engine and voice,
manages model lifetimes (:mod:`avatar_tts.lifecycle`) and degrades HQ to fast when it must.
"""
