"""What the server checks before a request's body is read: the API key, then the body's size.

Both are pure ASGI middleware, so they run before FastAPI reads and parses anything: a request without a key is
answered 401 with its body unread, and a body larger than the limit is refused 413 from its `Content-Length`, or,
when it is sent in chunks, as soon as the bytes received pass the limit (never buffered in full).
"""

from __future__ import annotations

import hmac
import json

PUBLIC_PATHS = ("/health", "/metrics", "/")
"""Open without a key: /health and /metrics as in vLLM, and the playground page (it holds no secrets; each call it
makes carries the key). Everything else (/v1/..., /docs, /openapi.json) needs one."""


async def answer(send, status: int, message: str, type_: str, code: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": {"message": message, "type": type_, "code": code, "param": None}}).encode()
    # `connection: close`: the body is left unread, so the server hangs up rather than drain it for keep-alive.
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           (b"connection", b"close")]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _header(scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


class ApiKeyMiddleware:
    """`Authorization: Bearer <key>` on every route but PUBLIC_PATHS, checked before the body is read."""

    def __init__(self, app, keys: list[str]):
        self.app, self.keys = app, [k.encode() for k in keys if k]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.keys or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        scheme, _, token = _header(scope, b"authorization").partition(" ")
        token = token.strip()
        challenge = {"WWW-Authenticate": "Bearer"}
        if scheme.lower() != "bearer" or not token:
            await answer(send, 401, "missing API key: send 'Authorization: Bearer <key>'", "authentication_error",
                          "missing_api_key", challenge)
        elif not any(hmac.compare_digest(token.encode(), key) for key in self.keys):
            await answer(send, 401, "invalid API key", "authentication_error", "invalid_api_key", challenge)
        else:
            await self.app(scope, receive, send)


class BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """413 for bodies over `max_bytes`: from Content-Length before reading, or while the chunks arrive."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = (f"the request body is larger than this server's limit of {self.max_bytes} bytes "
                   "(--max-body-mb): send less")
        declared = _header(scope, b"content-length")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await answer(send, 413, message, "invalid_request_error", "body_too_large")
            return
        received, too_large, started = 0, False, False

        async def counting_receive():
            nonlocal received, too_large
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    raise BodyTooLarge(message)  # FastAPI turns a failed body read into an error response
            return event

        async def guarded_send(event):
            nonlocal started
            if too_large:  # whatever the app answers to the failed read, the client hears why
                if event["type"] == "http.response.start" and not started:
                    started = True
                    await answer(send, 413, message, "invalid_request_error", "body_too_large")
                return
            started = started or event["type"] == "http.response.start"
            await send(event)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            if not started:
                await answer(send, 413, message, "invalid_request_error", "body_too_large")
