"""VTube Studio bridge: a plugin client of VTube Studio's public WebSocket API that moves the
model with the stage's avatar events (docs/avatar-control.md, "VTube Studio").

Per connection: ``APIStateRequest``; the stored token (``AuthenticationRequest``) or, once, a new
one (``AuthenticationTokenRequest``: the streamer clicks Allow in VTube Studio; the token is kept
in ``token_file``); ``CurrentModelRequest``; a ``ParameterCreationRequest`` per custom parameter;
then ``InjectParameterDataRequest`` at ``rate_hz`` for as long as the connection lasts (VTube
Studio forgets injected values about a second after the last data) and ``HotkeyTriggerRequest``
for an emotion's hotkey. A lost connection is retried with exponential backoff; a denied token
request parks the bridge with a clear status instead of asking again and again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from avatar.application.avatar import PARAMETERS, PoseConfig, Subscription
from avatar.application.avatar.animator import AvatarAnimator
from avatar.application.ports.common import ComponentHealth
from avatar.settings import VTubeStudioSettings

log = logging.getLogger(__name__)

API_NAME = "VTubeStudioPublicAPI"
API_VERSION = "1.0"
#: VTube Studio error ids used here (its API documentation, ErrorID list).
ERROR_TOKEN_DENIED = 50
ERROR_INJECT_PARAM_NOT_FOUND = 453
#: How often the loaded model is asked for again while connected.
MODEL_POLL_S = 2.0


class VTSAPIError(Exception):
    def __init__(self, error_id: int, message: str) -> None:
        super().__init__(f"VTube Studio error {error_id}: {message}")
        self.error_id = error_id


class TokenDeniedError(Exception):
    """The streamer clicked Deny (or revoked the plugin) in VTube Studio."""


@dataclass
class BridgeStatus:
    """What ``/api/v1/health`` shows under ``vtube_studio``."""

    url: str
    state: str = "starting"
    connected: bool = False
    authenticated: bool = False
    model_loaded: bool = False
    model_name: str = ""
    vts_version: str = ""
    last_error: str = ""
    injections: int = 0
    connections: int = 0


class VTubeStudioBridge:
    """Connects to VTube Studio and animates the model from the stage's avatar events."""

    def __init__(
        self,
        settings: VTubeStudioSettings,
        subscribe: Callable[[], Subscription],
        poses: PoseConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._subscribe = subscribe
        self.poses = poses
        self._clock = clock
        self.status = BridgeStatus(url=settings.url)
        self.animator = AvatarAnimator(playback_delay_s=settings.playback_delay_ms / 1000.0)
        self._task: asyncio.Task[None] | None = None
        self._events_task: asyncio.Task[None] | None = None
        self._subscription: Subscription | None = None
        self._closed = False

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._subscription = self._subscribe()
        self._events_task = asyncio.create_task(self._follow_events(), name="vts-events")
        self._task = asyncio.create_task(self._run(), name="vts-bridge")

    async def aclose(self) -> None:
        self._closed = True
        if self._subscription is not None:
            self._subscription.close()
        for task in (self._task, self._events_task):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self.status.state = "stopped"
        self.status.connected = self.status.authenticated = False

    async def health(self) -> ComponentHealth:
        s = self.status
        detail = f"{s.state}: {s.url}" + (f" ({s.last_error})" if s.last_error else "")
        # Optional: VTube Studio not running must not make the orchestrator unhealthy.
        return ComponentHealth(name="vtube_studio", ok=True, detail=detail, extra=asdict(s))

    # --- events ------------------------------------------------------------------------------

    async def _follow_events(self) -> None:
        assert self._subscription is not None
        while (event := await self._subscription.get()) is not None:
            self.animator.apply(event, self._clock())

    # --- connection loop ---------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = self.settings.reconnect_min_s
        while not self._closed:
            self.status.state = "connecting"
            authenticated = False
            try:
                async with websockets.connect(
                    self.settings.url, open_timeout=self.settings.request_timeout_s, max_size=2**20
                ) as ws:
                    self.status.connected = True
                    self.status.connections += 1
                    self.status.last_error = ""
                    await self._handshake(ws)
                    authenticated = True
                    backoff = self.settings.reconnect_min_s
                    await self._feed(ws)
            except TokenDeniedError as exc:
                self.status.state = "denied"
                self.status.last_error = str(exc)
                self.status.connected = self.status.authenticated = False
                log.warning("VTube Studio: %s; the bridge stays idle until restarted", exc)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.status.last_error = f"{type(exc).__name__}: {exc}"
                log.info("VTube Studio at %s: %s", self.settings.url, self.status.last_error)
            self.status.connected = self.status.authenticated = False
            self.status.model_loaded = False
            self.status.state = "reconnecting"
            delay = backoff * random.uniform(0.8, 1.2)
            if not authenticated:
                backoff = min(backoff * 2, self.settings.reconnect_max_s)
            await asyncio.sleep(delay)

    async def _request(
        self,
        ws: ClientConnection,
        message_type: str,
        data: dict[str, Any] | None = None,
        *,
        wait_s: float | None = None,
    ) -> dict[str, Any]:
        request_id = uuid.uuid4().hex[:16]
        payload: dict[str, Any] = {
            "apiName": API_NAME,
            "apiVersion": API_VERSION,
            "requestID": request_id,
            "messageType": message_type,
        }
        if data is not None:
            payload["data"] = data
        await ws.send(json.dumps(payload))
        deadline = self._clock() + (wait_s or self.settings.request_timeout_s)
        while True:
            left = deadline - self._clock()
            if left <= 0:
                raise TimeoutError(f"no answer to {message_type} from VTube Studio")
            raw = await asyncio.wait_for(ws.recv(), left)
            try:
                answer = json.loads(raw)
            except (TypeError, json.JSONDecodeError):
                continue
            if not isinstance(answer, dict) or answer.get("requestID") != request_id:
                continue  # an event or a late answer
            body = answer.get("data") or {}
            if answer.get("messageType") == "APIError":
                raise VTSAPIError(int(body.get("errorID", -1)), str(body.get("message", "")))
            if not isinstance(body, dict):
                raise VTSAPIError(-1, f"malformed {message_type} answer")
            return body

    async def _handshake(self, ws: ClientConnection) -> None:
        state = await self._request(ws, "APIStateRequest")
        self.status.vts_version = str(state.get("vTubeStudioVersion", ""))
        if state.get("active") is False:
            raise VTSAPIError(1, "the VTube Studio API is switched off")
        token = self._read_token()
        if token and not await self._authenticate(ws, token):
            log.info("VTube Studio refused the stored token; asking for a new one")
            self._forget_token()
            token = None
        if not token:
            self.status.state = "waiting_for_allow"
            try:
                answer = await self._request(
                    ws,
                    "AuthenticationTokenRequest",
                    {
                        "pluginName": self.settings.plugin_name,
                        "pluginDeveloper": self.settings.plugin_developer,
                    },
                    wait_s=self.settings.token_request_timeout_s,
                )
            except VTSAPIError as exc:
                if exc.error_id == ERROR_TOKEN_DENIED:
                    raise TokenDeniedError(
                        "the plugin was denied in VTube Studio: allow it there (or re-enable it in "
                        "the API plugin list) and restart AVATAR"
                    ) from exc
                raise
            token = str(answer.get("authenticationToken", ""))
            if not token:
                raise VTSAPIError(-1, "VTube Studio sent an empty token")
            self._store_token(token)
            if not await self._authenticate(ws, token):
                raise VTSAPIError(-1, "VTube Studio refused the token it had just issued")
        self.status.authenticated = True
        await self._refresh_model(ws)
        await self._create_parameters(ws)
        self.status.state = "running"

    async def _authenticate(self, ws: ClientConnection, token: str) -> bool:
        answer = await self._request(
            ws,
            "AuthenticationRequest",
            {
                "pluginName": self.settings.plugin_name,
                "pluginDeveloper": self.settings.plugin_developer,
                "authenticationToken": token,
            },
        )
        return bool(answer.get("authenticated"))

    async def _refresh_model(self, ws: ClientConnection) -> None:
        model = await self._request(ws, "CurrentModelRequest")
        self.status.model_loaded = bool(model.get("modelLoaded"))
        self.status.model_name = str(model.get("modelName", ""))

    async def _create_parameters(self, ws: ClientConnection) -> None:
        for spec in PARAMETERS.values():
            await self._request(
                ws,
                "ParameterCreationRequest",
                {
                    "parameterName": spec.name,
                    "explanation": spec.explanation[:250],
                    "min": spec.min,
                    "max": spec.max,
                    "defaultValue": spec.default,
                },
            )

    async def _feed(self, ws: ClientConnection) -> None:
        """Inject every parameter at ``rate_hz`` while connected; trigger emotion hotkeys."""
        period = 1.0 / self.settings.rate_hz
        next_tick = self._clock()
        next_model_poll = self._clock() + MODEL_POLL_S
        while not self._closed:
            while self.animator.hotkeys:
                hotkey = self.animator.hotkeys.pop(0)
                try:
                    await self._request(ws, "HotkeyTriggerRequest", {"hotkeyID": hotkey})
                except VTSAPIError as exc:
                    self.status.last_error = f"hotkey {hotkey!r}: {exc}"
            values = self.animator.values(self._clock())
            try:
                await self._request(
                    ws,
                    "InjectParameterDataRequest",
                    {
                        "faceFound": False,
                        "mode": "set",
                        "parameterValues": [{"id": k, "value": round(v, 4)} for k, v in values.items()],
                    },
                )
                self.status.injections += 1
            except VTSAPIError as exc:
                self.status.last_error = f"inject: {exc}"
                if exc.error_id != ERROR_INJECT_PARAM_NOT_FOUND:
                    raise
                await self._create_parameters(ws)  # deleted in VTube Studio: create them again
            if self._clock() >= next_model_poll:
                await self._refresh_model(ws)
                next_model_poll = self._clock() + MODEL_POLL_S
            next_tick += period
            delay = next_tick - self._clock()
            if delay < -period:  # fell behind (slow answers): do not burst to catch up
                next_tick = self._clock()
                delay = 0.0
            await asyncio.sleep(max(0.0, delay))

    # --- token file --------------------------------------------------------------------------

    def _read_token(self) -> str | None:
        path = self.settings.token_file
        try:
            token = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.status.last_error = f"cannot read the token file {path}: {exc}"
            return None
        return token or None

    def _store_token(self, token: str) -> None:
        path = self.settings.token_file
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(token)
        except OSError as exc:
            # Still usable for this connection; the streamer will be asked again next time.
            self.status.last_error = f"cannot store the token in {path}: {exc}"
            log.warning("VTube Studio: %s", self.status.last_error)

    def _forget_token(self) -> None:
        with contextlib.suppress(OSError):
            self.settings.token_file.unlink()
