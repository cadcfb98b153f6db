"""ASGI guards in front of the API: the API key, then the body size, both before the
framework reads a byte of the body."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.schemas import error_response


class ApiKeyGate:
    """401 for a request under ``/api`` without a valid key in ``X-API-Key`` or
    ``Authorization: Bearer``, before its body is read. Every key is compared, in
    constant time, whichever matches."""

    def __init__(self, app: ASGIApp, keys: list[bytes]) -> None:
        self.app, self.keys = app, keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (scope["path"] == "/api" or scope["path"].startswith("/api/")):
            headers = dict(scope["headers"])
            given = headers.get(b"x-api-key")
            scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
            if given is None and scheme.lower() == b"bearer":
                given = token.strip()
            if not given:
                error = "authentication: send an API key in X-API-Key (or Authorization: Bearer)"
            elif not any([hmac.compare_digest(given, key) for key in self.keys]):
                error = "authentication: the API key is not valid"
            else:
                await self.app(scope, receive, send)
                return
            response = error_response(401, error)
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class BodySizeLimit:
    """Refuses a body over ``max_bytes`` with 413: at once if Content-Length says so,
    otherwise once the bytes read pass the limit. The body is read here, before the
    app sees it (the framework would turn an error raised while it reads into a 400)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(413, f"request body: larger than {self.max_bytes} bytes")
        await response(scope, receive, send)
