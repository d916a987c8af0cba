"""The OpenAI-compatible HTTP face of a CoE: route -> prefetch -> queue -> batch -> stream.

HTTP handlers only parse, route and relay: generation happens on the scheduler's worker
thread, whose events are handed to the event loop through an asyncio queue per request."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from coeflow.coefile import CoEFile
from coeflow.engine import Delta
from coeflow.errors import CoeflowError
from coeflow.scheduler import Failed, Finished, GenRequest, QueueFullError, Scheduler, ShuttingDownError, Started
from coeflow.server.metrics import Metrics
from coeflow.server.protocol import (APIError, Limits, LoadBody, ParsedRequest, PinBody, bad, parse_admin,
                                     parse_request)

ROUTED = "coe"


@dataclass
class CoEServer:
    """Everything a request needs; built by `coeflow.server.build`."""
    coe: CoEFile
    store: Any  # coeflow.store.ExpertStore
    scheduler: Scheduler
    runtimes: dict[str, Any]  # expert -> coeflow.backend.real.ExpertRuntime
    router: Any | None  # coeflow.router.Router
    limits: Limits = field(default_factory=Limits)
    api_key: str | None = None
    broken: dict[str, str] = field(default_factory=dict)  # expert -> why it cannot serve
    contexts: dict[str, int] = field(default_factory=dict)  # expert -> context length (tokens)
    warm_up: list[str] = field(default_factory=list)  # one expert per model shape, compiled at start
    recorder: Any | None = None  # coeflow.trace.TraceRecorder: one trace line per accepted request
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self.metrics = Metrics(
            queue_depth=lambda: {n: self.scheduler.queued(n) for n in self.runtimes},
            tiers=lambda: {s.name: s.tier for s in self.store.status()})


@dataclass
class Choice:
    """Where a request goes and why."""
    expert: str
    routed: bool
    confidence: float | None = None
    fell_back: bool = False


def create_app(srv: CoEServer) -> FastAPI:
    app = FastAPI(title="coeflow", description="A Composition of Experts behind one OpenAI-compatible endpoint")

    @app.exception_handler(APIError)
    async def _api_error(_: Request, e: APIError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if srv.api_key and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {srv.api_key}".encode()):
                e = APIError(401, "invalid or missing API key: send 'Authorization: Bearer <key>'",
                             "authentication_error", code="invalid_api_key")
                return JSONResponse(e.body(), status_code=401)
        return await call_next(request)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "experts": len(srv.runtimes), "broken": srv.broken}

    @app.get("/metrics")
    async def metrics() -> Response:
        return PlainTextResponse(srv.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models() -> dict:
        names = ([ROUTED] if srv.router else []) + list(srv.coe.expert_names)
        return {"object": "list", "data": [
            {"id": n, "object": "model", "created": srv.created, "owned_by": "coeflow"} for n in names]}

    @app.get("/v1/experts")
    async def experts() -> dict:
        return {"object": "list", "data": await asyncio.to_thread(_expert_rows, srv)}

    @app.post("/v1/experts/{name}/{action}")
    async def admin(name: str, action: str, request: Request) -> dict:
        return await _admin(srv, name, action, await _json(request, allow_empty=True))

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await _complete(srv, request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await _complete(srv, request, chat=False)

    return app


def _expert_rows(srv: CoEServer) -> list[dict]:
    """GET /v1/experts: the store's status of each expert, with its queue and why it is broken."""
    rows = []
    for s in srv.store.status():
        row = _status_dict(s)
        row["queued"] = srv.scheduler.queued(s.name) if s.name in srv.runtimes else 0
        if s.name in srv.broken:
            row["error"] = row.get("error") or srv.broken[s.name]
        rows.append(row)
    return rows


async def _admin(srv: CoEServer, name: str, action: str, raw: Any) -> dict:
    """POST /v1/experts/NAME/load|unload|pin: move or pin an expert, answer its new status."""
    if name not in srv.coe.expert_names:
        raise APIError(404, f"no expert named {name!r}", code="model_not_found", param="name")
    body = parse_admin(action, raw)
    try:
        if isinstance(body, PinBody):
            await asyncio.to_thread(srv.store.pin, name, body.pinned)
        elif isinstance(body, LoadBody):
            await asyncio.to_thread(srv.store.load, name, body.tier)
        else:
            await asyncio.to_thread(srv.store.unload, name, body.tier)
    except CoeflowError as e:
        raise APIError(400, str(e)) from None
    return _status_dict(next(s for s in srv.store.status() if s.name == name))


def _status_dict(s: Any) -> dict:
    """An ExpertStatus as plain JSON."""
    return json.loads(json.dumps(dataclasses.asdict(s), default=str))


async def _json(request: Request, allow_empty: bool = False) -> Any:
    raw = await request.body()
    if not raw and allow_empty:
        return {}
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise bad(f"the request body is not valid JSON: {e}") from None


def _choose(srv: CoEServer, req: ParsedRequest) -> Choice:
    if req.model == ROUTED:
        if srv.router is None:
            raise APIError(404, "model 'coe' needs a trained router next to the CoE file "
                           "(coeflow router train); name an expert instead", code="model_not_found", param="model")
        t = time.perf_counter()
        d = srv.router.route(req.routing_text)
        srv.metrics.router_latency.observe(time.perf_counter() - t)
        return Choice(d.expert, True, d.confidence, d.fell_back)
    if req.model not in srv.coe.expert_names:
        raise APIError(404, f"model {req.model!r} does not exist: use 'coe' (routed) or one of "
                       f"{', '.join(srv.coe.expert_names)}", code="model_not_found", param="model")
    return Choice(req.model, False)


async def _complete(srv: CoEServer, request: Request, chat: bool) -> Response:
    """POST /v1/chat/completions and /v1/completions: validate, route, queue, then answer
    whole or as a stream."""
    arrival = srv.scheduler.clock.now()
    req = parse_request(await _json(request), chat, srv.limits)
    choice = _choose(srv, req)
    ids = _prompt_ids(srv, req, choice.expert, chat)
    if srv.recorder is not None:
        srv.recorder.record(arrival, req.model, req.routing_text, len(ids), req.params.max_tokens,
                            route=choice.expert if choice.routed else None)
    events: asyncio.Queue = asyncio.Queue()
    gen = _submit(srv, choice.expert, ids, req, arrival, events)
    first = await _started(srv, choice.expert, events, request, gen)
    info = {"expert": choice.expert, "routed": choice.routed, "confidence": choice.confidence,
            "fell_back": choice.fell_back, "source_tier": first.source_tier, "switch_s": first.switch_s,
            "queued_s": first.queued_s}
    headers = {"x-coeflow-expert": choice.expert, "x-coeflow-source-tier": first.source_tier}
    if choice.confidence is not None:
        headers["x-coeflow-confidence"] = f"{choice.confidence:.4f}"
    rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
    tracker = _Timing(srv, choice.expert, arrival, len(ids))
    if req.stream:
        return StreamingResponse(_sse(srv, req, chat, rid, info, events, request, gen, tracker),
                                 media_type="text/event-stream", headers=headers)
    return JSONResponse(await _whole(chat, rid, info, events, request, gen, tracker), headers=headers)


def _prompt_ids(srv: CoEServer, req: ParsedRequest, expert: str, chat: bool) -> list[int]:
    """The prompt's tokens, once the expert is known to serve and the prompt to fit."""
    if expert in srv.broken:
        srv.metrics.requests.labels(expert, "unavailable").inc()
        raise APIError(503, f"expert {expert!r} is unavailable: {srv.broken[expert]}",
                       "service_unavailable", code="expert_unavailable")
    tokenizer = srv.runtimes[expert].tokenizer
    ids = tokenizer.encode_chat(req.messages) if chat else tokenizer.encode(req.prompt)
    if not ids:
        raise bad("the prompt is empty after tokenisation", "prompt")
    if len(ids) > srv.limits.max_prompt_tokens:
        raise bad(f"the prompt has {len(ids)} tokens; the limit is {srv.limits.max_prompt_tokens}",
                  "messages" if chat else "prompt")
    ctx = srv.contexts.get(expert)
    if ctx and len(ids) + req.params.max_tokens > ctx:
        raise bad(f"prompt ({len(ids)} tokens) + max_tokens ({req.params.max_tokens}) exceeds the "
                  f"expert's context of {ctx} tokens", "max_tokens")
    return ids


def _submit(srv: CoEServer, expert: str, ids: list[int], req: ParsedRequest, arrival: float,
            events: asyncio.Queue) -> GenRequest:
    """Queue the request; its events reach `events` on this event loop."""
    loop = asyncio.get_running_loop()
    gen = GenRequest(expert, ids, req.params, sink=lambda ev: loop.call_soon_threadsafe(events.put_nowait, ev),
                     arrival=arrival)
    try:
        srv.scheduler.submit(gen)
    except QueueFullError as e:
        srv.metrics.requests.labels(expert, "rejected").inc()
        raise APIError(429, str(e), "rate_limit_error", code="queue_full", headers={"Retry-After": "1"}) from None
    except ShuttingDownError as e:
        raise APIError(503, str(e), "service_unavailable") from None
    return gen


async def _started(srv: CoEServer, expert: str, events: asyncio.Queue, request: Request,
                   gen: GenRequest) -> Started:
    """Wait for the start (or the failure) before answering, so a failed expert is a clean 503."""
    first = await _next(events, request, gen)
    if isinstance(first, Failed):
        srv.metrics.requests.labels(expert, "failed").inc()
        status = 503 if isinstance(first.error, CoeflowError) else 500
        raise APIError(status, f"expert {expert!r} failed: {first.error}",
                       "service_unavailable" if status == 503 else "server_error", code="expert_unavailable")
    assert isinstance(first, Started)
    srv.metrics.acquires.labels(first.source_tier).inc()
    if first.source_tier != "device":
        srv.metrics.switch.labels(first.source_tier).observe(first.switch_s)
    return first


async def _whole(chat: bool, rid: str, info: dict, events: asyncio.Queue, request: Request, gen: GenRequest,
                 tracker: "_Timing") -> dict[str, Any]:
    """The non-streamed answer: every token, then one body."""
    text, reason, n = [], "length", 0
    while True:
        ev = await _next(events, request, gen)
        if isinstance(ev, Delta):
            tracker.token()
            text.append(ev.text)
        elif isinstance(ev, Finished):
            reason, n = ev.reason, ev.completion_tokens
            break
        elif isinstance(ev, Failed):
            tracker.done("failed", 0)
            raise APIError(500, f"generation failed: {ev.error}", "server_error")
    tracker.done("ok", n)
    p = len(gen.prompt_ids)
    body: dict[str, Any] = {"id": rid, "created": int(time.time()), "model": info["expert"], "coeflow": info,
                            "usage": {"prompt_tokens": p, "completion_tokens": n, "total_tokens": p + n}}
    if chat:
        body["object"] = "chat.completion"
        body["choices"] = [{"index": 0, "message": {"role": "assistant", "content": "".join(text)},
                            "finish_reason": reason, "logprobs": None}]
    else:
        body["object"] = "text_completion"
        body["choices"] = [{"index": 0, "text": "".join(text), "finish_reason": reason, "logprobs": None}]
    return body


async def _next(events: asyncio.Queue, request: Request, gen: GenRequest):
    """The request's next event; a client that went away cancels its sequence."""
    while True:
        try:
            return await asyncio.wait_for(events.get(), timeout=0.5)
        except asyncio.TimeoutError:
            if await request.is_disconnected():
                gen.cancelled.set()
                raise APIError(499, "client disconnected") from None
        except asyncio.CancelledError:
            gen.cancelled.set()
            raise


class _Timing:
    """Time to first token and time per output token of one request, into the metrics."""

    def __init__(self, srv: CoEServer, expert: str, arrival: float, prompt_tokens: int):
        self.srv, self.expert, self.arrival = srv, expert, arrival
        self.first: float | None = None
        self.last = arrival
        srv.metrics.prompt_tokens.labels(expert).inc(prompt_tokens)

    def token(self) -> None:
        self.last = self.srv.scheduler.clock.now()
        if self.first is None:
            self.first = self.last
            self.srv.metrics.ttft.labels(self.expert).observe(self.first - self.arrival)

    def done(self, outcome: str, completion_tokens: int) -> None:
        m = self.srv.metrics
        m.requests.labels(self.expert, outcome).inc()
        m.completion_tokens.labels(self.expert).inc(completion_tokens)
        if self.first is not None and completion_tokens > 1:
            m.tpot.labels(self.expert).observe((self.last - self.first) / (completion_tokens - 1))


async def _sse(srv: CoEServer, req: ParsedRequest, chat: bool, rid: str, info: dict, events: asyncio.Queue,
               request: Request, gen: GenRequest, tracker: _Timing) -> AsyncIterator[bytes]:
    created = int(time.time())
    obj = "chat.completion.chunk" if chat else "text_completion"

    def chunk(text: str | None, reason: str | None, first: bool = False, usage: dict | None = None) -> bytes:
        c: dict[str, Any] = {"id": rid, "object": obj, "created": created, "model": info["expert"]}
        if usage is not None:
            c["choices"], c["usage"] = [], usage
        elif chat:
            delta = {"role": "assistant", "content": text or ""} if first else (
                {"content": text} if text else {})
            c["choices"] = [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}]
        else:
            c["choices"] = [{"index": 0, "text": text or "", "finish_reason": reason, "logprobs": None}]
        if first:
            c["coeflow"] = info
        return f"data: {json.dumps(c)}\n\n".encode()

    finished = False
    try:
        yield chunk("", None, first=True)
        while True:
            ev = await events.get()
            if isinstance(ev, Delta):
                tracker.token()
                if ev.text:
                    yield chunk(ev.text, None)
            elif isinstance(ev, Finished):
                tracker.done("ok", ev.completion_tokens)
                finished = True
                yield chunk(None, ev.reason)
                if req.include_usage:
                    n = ev.completion_tokens
                    p = len(gen.prompt_ids)
                    yield chunk(None, None, usage={"prompt_tokens": p, "completion_tokens": n,
                                                   "total_tokens": p + n})
                break
            elif isinstance(ev, Failed):
                tracker.done("failed", 0)
                finished = True
                err = {"error": {"message": f"generation failed: {ev.error}", "type": "server_error"}}
                yield f"data: {json.dumps(err)}\n\n".encode()
                break
        yield b"data: [DONE]\n\n"
    finally:
        if not finished:  # the client went away mid-stream: free its slot in the batch
            gen.cancelled.set()
            tracker.done("cancelled", 0)
