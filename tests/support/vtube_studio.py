"""A protocol-level stand-in for VTube Studio's public WebSocket API (written from its public
documentation), for tests: it answers the requests the bridge uses the way the real API does,
errors included (denied token, unknown parameter, missing fields, unauthenticated requests), and
records everything it receives with the time it arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.asyncio.server import Server, ServerConnection

from tests.support.net import free_port

API_NAME = "VTubeStudioPublicAPI"
#: A few of VTube Studio's default tracking parameters (custom ones may not take these names).
DEFAULT_PARAMETERS = frozenset(
    {"FaceAngleX", "FaceAngleY", "FaceAngleZ", "MouthOpen", "MouthSmile", "EyeOpenLeft", "EyeOpenRight"}
)
NAME_RE = re.compile(r"^[A-Za-z0-9]{4,32}$")


@dataclass
class Received:
    at: float
    message_type: str
    data: dict[str, Any]
    connection: int


@dataclass
class VTubeStudioStandIn:
    """``allow``: what the streamer clicks when a plugin asks for a token."""

    allow: bool = True
    port: int = field(default_factory=free_port)
    hotkeys: frozenset[str] = frozenset({"SmileExpression", "SadExpression"})
    model_loaded: bool = True
    received: list[Received] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: (arrival time, {parameter id: value}) of every accepted injection.
    injections: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    triggered: list[str] = field(default_factory=list)
    connections: int = 0
    _server: Server | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await websockets.serve(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        """Close the server and every connection (VTube Studio quits)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def of(self, message_type: str) -> list[Received]:
        return [r for r in self.received if r.message_type == message_type]

    def values(self, parameter: str) -> list[tuple[float, float]]:
        return [(t, v[parameter]) for t, v in self.injections if parameter in v]

    async def wait_for(self, predicate: Any, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("the stand-in never saw what the test waited for")
            await asyncio.sleep(0.02)

    # --- protocol ---------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        conn = self.connections
        authenticated = False
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in ws:
                try:
                    request = json.loads(raw)
                except (TypeError, json.JSONDecodeError):
                    await ws.send(self._error(None, 2, "The JSON payload is invalid."))
                    continue
                if not isinstance(request, dict):
                    await ws.send(self._error(None, 2, "The JSON payload is invalid."))
                    continue
                request_id = request.get("requestID") or str(uuid.uuid4())
                if request.get("apiName") != API_NAME:
                    await ws.send(self._error(request_id, 3, "apiName is invalid."))
                    continue
                if request.get("apiVersion") != "1.0":
                    await ws.send(self._error(request_id, 4, "apiVersion is invalid."))
                    continue
                kind = request.get("messageType")
                data = request.get("data") or {}
                self.received.append(Received(time.monotonic(), str(kind), data, conn))
                if not kind:
                    await ws.send(self._error(request_id, 6, "messageType is missing."))
                    continue
                if kind == "APIStateRequest":
                    answer = {
                        "active": True,
                        "vTubeStudioVersion": "1.28.0",
                        "currentSessionAuthenticated": authenticated,
                    }
                    await ws.send(self._answer(request_id, "APIStateResponse", answer))
                elif kind == "AuthenticationTokenRequest":
                    await ws.send(self._token(request_id, data))
                elif kind == "AuthenticationRequest":
                    reply, authenticated = self._authenticate(request_id, data, authenticated)
                    await ws.send(reply)
                elif not authenticated:
                    await ws.send(self._error(request_id, 8, "This request requires authentication."))
                else:
                    await ws.send(self._authenticated_request(request_id, str(kind), data))

    def _token(self, request_id: str, data: dict[str, Any]) -> str:
        name, developer = data.get("pluginName"), data.get("pluginDeveloper")
        if not isinstance(name, str) or not 3 <= len(name) <= 32:
            return self._error(request_id, 52, "pluginName must be 3 to 32 characters.")
        if not isinstance(developer, str) or not 3 <= len(developer) <= 32:
            return self._error(request_id, 53, "pluginDeveloper must be 3 to 32 characters.")
        if not self.allow:
            return self._error(request_id, 50, "User has denied API access for your plugin.")
        token = uuid.uuid4().hex
        self.tokens.add(token)
        return self._answer(request_id, "AuthenticationTokenResponse", {"authenticationToken": token})

    def _authenticate(self, request_id: str, data: dict[str, Any], current: bool) -> tuple[str, bool]:
        if not data.get("authenticationToken"):
            return self._error(request_id, 100, "authenticationToken is missing."), current
        if not data.get("pluginName"):
            return self._error(request_id, 101, "pluginName is missing."), current
        if not data.get("pluginDeveloper"):
            return self._error(request_id, 102, "pluginDeveloper is missing."), current
        ok = data["authenticationToken"] in self.tokens
        reason = "Token valid." if ok else "Token invalid or revoked."
        body = {"authenticated": ok, "reason": reason}
        return self._answer(request_id, "AuthenticationResponse", body), ok

    def _authenticated_request(self, request_id: str, kind: str, data: dict[str, Any]) -> str:
        if kind == "CurrentModelRequest":
            model_name = "Stand-in model" if self.model_loaded else ""
            body = {"modelLoaded": self.model_loaded, "modelName": model_name}
            return self._answer(request_id, "CurrentModelResponse", body)
        if kind == "ParameterCreationRequest":
            name = data.get("parameterName")
            if not isinstance(name, str) or not NAME_RE.match(name):
                return self._error(request_id, 350, "The parameter name is invalid.")
            if name in DEFAULT_PARAMETERS:
                return self._error(request_id, 354, "Default parameter names are not allowed.")
            if len(str(data.get("explanation", ""))) >= 256:
                return self._error(request_id, 353, "The explanation is too long.")
            numbers = [data.get(k) for k in ("min", "max", "defaultValue")]
            if not all(isinstance(n, int | float) and -1e6 <= n <= 1e6 for n in numbers):
                return self._error(request_id, 351, "min, max and defaultValue must be numbers in range.")
            self.parameters[name] = dict(data)
            return self._answer(request_id, "ParameterCreationResponse", {"parameterName": name})
        if kind == "InjectParameterDataRequest":
            values = data.get("parameterValues")
            if not isinstance(values, list) or not values:
                return self._error(request_id, 450, "No data provided.")
            if data.get("mode", "set") not in ("set", "add"):
                return self._error(request_id, 455, "Unknown mode.")
            accepted: dict[str, float] = {}
            for item in values:
                pid, value = item.get("id"), item.get("value")
                if pid not in self.parameters and pid not in DEFAULT_PARAMETERS:
                    return self._error(request_id, 453, f"Parameter {pid} not found.")
                if not isinstance(value, int | float) or not -1e6 <= value <= 1e6:
                    return self._error(request_id, 451, f"Value for {pid} is invalid.")
                accepted[str(pid)] = float(value)
            self.injections.append((time.monotonic(), accepted))
            return self._answer(request_id, "InjectParameterDataResponse", {})
        if kind == "HotkeyTriggerRequest":
            hotkey = data.get("hotkeyID")
            if hotkey not in self.hotkeys:
                return self._error(request_id, 202, f"Hotkey {hotkey} not found in model.")
            self.triggered.append(str(hotkey))
            return self._answer(request_id, "HotkeyTriggerResponse", {"hotkeyID": hotkey})
        return self._error(request_id, 7, f"Unknown request type {kind}.")

    @staticmethod
    def _answer(request_id: str, kind: str, data: dict[str, Any]) -> str:
        return json.dumps(
            {
                "apiName": API_NAME,
                "apiVersion": "1.0",
                "timestamp": int(time.time() * 1000),
                "requestID": request_id,
                "messageType": kind,
                "data": data,
            }
        )

    @classmethod
    def _error(cls, request_id: str | None, error_id: int, message: str) -> str:
        body = {"errorID": error_id, "message": message}
        return cls._answer(request_id or str(uuid.uuid4()), "APIError", body)
