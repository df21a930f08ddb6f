"""ASGI middleware guarding writes before anything is parsed: the method, the token, the size.

A method the path does not serve (TRACE, or PUT on a read-only path) is answered 405 with the
path's full ``Allow`` before anything else, the token included. A write (any method but GET, HEAD
and OPTIONS) without the configured bearer token is answered 401 before one byte of its body is
read. Then a body larger than ``--max-body-bytes`` is answered 413, from its Content-Length when it
declares one, else as soon as the streamed bytes pass the limit. Both replies close the
connection, so the unread rest of the body is never read. The body that passes is handed to the
app whole.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from pydantic import SecretStr
from starlette.datastructures import Headers
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import token_problem
from api.errors import error_body

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PROBED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


async def _reply(send: Send, status: int, detail: str, headers: dict[str, str]) -> None:
    """A JSON error that closes the connection."""
    body = json.dumps(error_body(detail)).encode()
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *((name.lower().encode(), value.encode()) for name, value in headers.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class RequestLimits:
    """Token check, then body size limit, for every write; reads pass untouched."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: SecretStr | None,
        max_body_bytes: int,
        routes: Callable[[], Sequence[BaseRoute]] | None = None,
    ) -> None:
        self.app = app
        self.token = token
        self.max_body_bytes = max_body_bytes
        self.routes = routes

    def allowed_methods(self, scope: Scope) -> frozenset[str] | None:
        """The methods the request's path serves when its own method is not one of them; None
        when the method is served or no route has the path (the app answers: 404)."""
        if self.routes is None:
            return None
        routes = self.routes()
        if _served(routes, scope):
            return None
        allowed = {m for m in PROBED_METHODS if _served(routes, {**scope, "method": m})}
        return frozenset(allowed) if allowed else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Guard one request."""
        if scope["type"] == "http":
            allowed = self.allowed_methods(scope)
            if allowed is not None and scope["method"] not in allowed:
                await _reply(
                    send,
                    405,
                    f"{scope['method']} is not served here; allowed: {', '.join(sorted(allowed))}",
                    {"Allow": ", ".join(sorted(allowed))},
                )
                return
        if scope["type"] != "http" or scope["method"] in READ_METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        problem = token_problem(self.token, headers.get("authorization"))
        if problem is not None:
            await _reply(send, 401, problem, {"WWW-Authenticate": "Bearer"})
            return
        too_large = (
            f"the body is larger than {self.max_body_bytes} bytes (--max-body-bytes); "
            "send smaller batches"
        )
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await _reply(send, 400, "Content-Length is not a number", {})
                return
            if int(declared) > self.max_body_bytes:
                await _reply(send, 413, too_large, {})
                return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                await _reply(send, 413, too_large, {})
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(bytes(body), receive), send)


def _served(routes: Sequence[BaseRoute], scope: Scope) -> bool:
    """True when some route takes this path with this method."""
    return any(route.matches(scope)[0] is Match.FULL for route in routes)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the buffered body once, then whatever the server says next."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
