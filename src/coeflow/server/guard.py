"""What stands between a client and the handlers: the keys, the request's id, the body's size
and shape, and errors in OpenAI's shape whatever raised them.

Keys and ids are plain ASGI middlewares, not Starlette's BaseHTTPMiddleware, which hides a
client's disconnect from the handler (and so generated the whole answer for a client that
had gone). A body is read up to a byte limit (413 past it, without reading the rest), and
decoded off the event loop, so that no request can stall the others' handling."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from coeflow.server.protocol import APIError, bad


PROBES = ("/health", "/ready")  # open always: load balancers and orchestrators probe without keys
ADMIN_PREFIX = "/v1/experts/"  # POST there moves, pins and reloads experts


class Keys:
    """ASGI middleware: who may call what. With an API key, every route needs
    `Authorization: Bearer <key>` but the probes (and /metrics with `public_metrics`); with an
    admin key, the admin actions (POST /v1/experts/...) need it and no other, and it opens
    every other route too."""

    def __init__(self, app: ASGIApp, api_key: str | None, admin_key: str | None, public_metrics: bool) -> None:
        self.app, self.public_metrics = app, public_metrics
        self.api = f"Bearer {api_key}".encode() if api_key else None
        self.admin = f"Bearer {admin_key}".encode() if admin_key else None

    def _allowed(self, given: bytes, method: str, path: str) -> str | None:
        """None if the request may pass, else which key it lacks."""
        if self.admin is not None and method == "POST" and path.startswith(ADMIN_PREFIX):
            return None if secrets.compare_digest(given, self.admin) else "admin key"
        shell = method == "GET" and (path == "/" or path.startswith("/console/"))  # the console's static files
        if self.api is None or path in PROBES or (path == "/metrics" and self.public_metrics) or shell:
            return None
        if secrets.compare_digest(given, self.api) or (self.admin is not None and secrets.compare_digest(given, self.admin)):
            return None
        return "API key"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            lacking = self._allowed(dict(scope["headers"]).get(b"authorization", b""), scope["method"], scope["path"])
            if lacking is not None:
                e = APIError(401, f"invalid or missing {lacking}: send 'Authorization: Bearer <key>'",
                             "authentication_error", code="invalid_api_key")
                await JSONResponse(e.body(), status_code=401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class RequestId:
    """ASGI middleware: each request's id, the client's `X-Request-Id` if it sends a sane one
    (up to 128 letters, digits and ._:-), else a new one; echoed in the response's headers and
    kept in the scope's state for the handlers' log lines."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        sane = 0 < len(given) <= 128 and all((c.isascii() and c.isalnum()) or c in "._:-" for c in given)
        rid = given if sane else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())]}
            await send(message)
        await self.app(scope, receive, send_with_id)


def openai_errors(app: FastAPI) -> None:
    """Every error answer in OpenAI's shape: ours, Starlette's (404, 405) and FastAPI's."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, e: APIError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, e: HTTPException) -> JSONResponse:
        what = {404: f"no route {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
        err = APIError(e.status_code, what.get(e.status_code, str(e.detail)),
                       "invalid_request_error" if e.status_code < 500 else "server_error")
        return JSONResponse(err.body(), status_code=e.status_code, headers=getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, e: RequestValidationError) -> JSONResponse:
        return JSONResponse(bad(f"invalid request: {e.errors()[0].get('msg', e)}").body(), status_code=400)


async def read_json(request: Request, max_bytes: int, allow_empty: bool = False) -> Any:
    """The body as JSON, read up to `max_bytes` (413 past it) and decoded off the event loop."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw and allow_empty:
        return {}
    return await asyncio.to_thread(decode_json, raw)


def decode_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except RecursionError:
        raise bad("the request body is nested too deeply") from None
    except ValueError as e:  # malformed JSON, bytes that are not UTF-8, a number too long to read
        raise bad(f"the request body is not valid JSON: {e}") from None


def _too_large(max_bytes: int) -> APIError:
    return APIError(413, f"the request body is larger than {max_bytes} bytes (the server's --max-body)",
                    code="request_too_large")
