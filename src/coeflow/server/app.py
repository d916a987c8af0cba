"""The OpenAI-compatible HTTP face of a CoE: route -> prefetch -> queue -> batch -> stream.

HTTP handlers only relay: a request's parsing, templating, tokenizing and routing run on a
worker thread behind size checks, generation on the scheduler's thread, whose events reach the
event loop through an asyncio queue per request. So no request's input holds up another's."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles

from coeflow.coefile import CoEFile
from coeflow.engine import InvalidRequestError
from coeflow.errors import CoeflowError
from coeflow.model import dtype_name
from coeflow.scheduler import Failed, GenRequest, QueueFullError, Scheduler, ShuttingDownError, Started
from coeflow.server.answer import Answer, Events, Logprobs, Streamed, Timing, stream, whole
from coeflow.server.guard import Keys, RequestId, openai_errors, read_json
from coeflow.server.health import ExpertHealth
from coeflow.server.metrics import LiveSources, Metrics
from coeflow.server.options import ServerOptions
from coeflow.server.protocol import (ROUTED, APIError, LoadBody, ParsedRequest, PinBody, bad, choice_params,
                                     parse_admin, parse_request, parse_route)
from coeflow.server.stats import RecentRequests
from coeflow.server.structured import GrammarConstraint
from coeflow.server.tools import ToolFormat, ToolUse, call_grammar, takes_tools


@dataclass
class CoEServer:
    """Everything a request needs; built by `coeflow.server.build`."""
    coe: CoEFile
    store: Any  # coeflow.store.ExpertStore
    scheduler: Scheduler
    runtimes: dict[str, Any]  # expert -> coeflow.backend.real.ExpertRuntime
    router: Any | None  # coeflow.router.Router
    health: ExpertHealth
    opts: ServerOptions = field(default_factory=ServerOptions)  # keys, limits, timeouts, CORS, console
    contexts: dict[str, int] = field(default_factory=dict)  # expert -> context length (tokens)
    warm_up: list[str] = field(default_factory=list)  # one expert per model shape, compiled at start
    recorder: Any | None = None  # coeflow.trace.TraceRecorder: one trace line per accepted request
    created: int = field(default_factory=lambda: int(time.time()))
    tool_formats: dict[str, ToolFormat | None] = field(default_factory=dict)  # expert -> how it calls tools

    def __post_init__(self) -> None:
        self.metrics = Metrics(LiveSources(
            queue_depth=lambda: {n: self.scheduler.queued(n) for n in self.runtimes},
            running=lambda: {n: self.scheduler.running(n) for n in self.runtimes},
            tiers=lambda: {s.name: s.tier for s in self.store.status()},
            kv_stats=lambda: self.scheduler.backend.kv_stats(),
            step_rows=lambda: dict(self.scheduler.step_rows)))
        self.recent = RecentRequests(self.scheduler.clock.now)  # the clock requests are timed by


@dataclass
class Choice:
    """Where a request goes and why. A routed request keeps the router's ranking of every
    expert, for when its expert fails (`instead`), and the experts that failed it (`failed`)."""
    expert: str
    routed: bool
    confidence: float | None = None
    fell_back: bool = False
    candidates: tuple[tuple[str, float], ...] = ()  # (expert, score), likeliest first
    failed: tuple[str, ...] = ()

    def instead(self, srv: CoEServer) -> "Choice | None":
        """The router's next choice that can serve, after this expert failed; None if none can."""
        if not self.routed:
            return None
        failed = self.failed + (self.expert,)
        rest = [e for e, _ in self.candidates if e not in failed and srv.health.failure(e) is None]
        return Choice(rest[0], True, self.confidence, True, self.candidates, failed) if rest else None


def create_app(srv: CoEServer) -> FastAPI:
    app = FastAPI(title="coeflow", description="A Composition of Experts behind one OpenAI-compatible endpoint")
    openai_errors(app)
    opts = srv.opts
    app.add_middleware(Keys, api_key=opts.api_key, admin_key=opts.admin_key, public_metrics=opts.public_metrics)
    if opts.cors_origins:  # outside the keys: a browser's preflight carries none
        app.add_middleware(CORSMiddleware, allow_origins=list(opts.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["*"],  # ours (X-Request-Timeout, X-Request-Id) and SDKs' own
                           expose_headers=["X-Request-Id", "X-Coeflow-Expert", "X-Coeflow-Source-Tier",
                                           "X-Coeflow-Confidence", "X-Coeflow-Rerouted-From"])
    app.add_middleware(RequestId)  # outermost: every answer carries the id, a refusal too
    if opts.console:
        app.mount("/console", StaticFiles(directory=CONSOLE), name="console")

        @app.get("/", include_in_schema=False)
        async def console() -> FileResponse:
            """The web console's page: static, no data in it (what it shows, it asks for, with the keys)."""
            return FileResponse(CONSOLE / "index.html")

    @app.get("/health")
    async def health() -> dict:
        """Alive, and which experts can serve."""
        return await asyncio.to_thread(srv.health.report, srv.coe.expert_names)

    @app.get("/ready")
    async def ready() -> Response:
        """200 when a request is served now; 503 while the start-up warm-up runs (requests sent
        then are accepted and queue behind it) or while the server drains to stop, so a load
        balancer sends elsewhere."""
        if srv.scheduler.warming_up:
            return JSONResponse({"status": "warming up"}, status_code=503)
        if srv.scheduler.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics")
    async def metrics() -> Response:
        return PlainTextResponse(await asyncio.to_thread(srv.metrics.render), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models() -> dict:
        names = ([ROUTED] if srv.router else []) + list(srv.coe.expert_names)
        return {"object": "list", "data": [
            {"id": n, "object": "model", "created": srv.created, "owned_by": "coeflow"} for n in names]}

    @app.get("/v1/experts")
    async def experts() -> dict:
        return {"object": "list", "data": await asyncio.to_thread(expert_rows, srv)}

    @app.post("/v1/route")
    async def route(request: Request) -> dict:
        """Where the router would send a prompt, and every expert's score; nothing is generated."""
        prompt = parse_route(await read_json(request, srv.opts.limits.max_body_bytes)).prompt
        return await asyncio.to_thread(_route, srv, prompt)

    @app.get("/v1/stats")
    async def stats() -> dict:
        """The last minutes, for the console: requests/s, TTFT and TPOT percentiles, switches and
        device-tier hits in steps of seconds, and each expert's requests and tokens/s."""
        return srv.recent.report()

    @app.post("/v1/experts/{name}/{action}")
    async def admin(name: str, action: str, request: Request) -> dict:
        return await _admin(srv, name, action, await read_json(request, srv.opts.limits.max_body_bytes, allow_empty=True))

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await _complete(srv, request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await _complete(srv, request, chat=False)

    return app


def expert_rows(srv: CoEServer) -> list[dict]:
    """GET /v1/experts: the store's status of each expert, with its queue, the dtype it is
    served in, how its weights are quantized (None: dense), and why it is broken."""
    rows = []
    for s in srv.store.status():
        row = _status_dict(s)
        row["queued"] = srv.scheduler.queued(s.name)
        row["state"] = srv.health.state(s.name)
        row["error"] = srv.health.failure(s.name)
        row["dtype"] = dtype_name(srv.scheduler.backend.serving_dtype(s.name)) if row["error"] is None else None
        row["quantization"] = srv.scheduler.backend.quantization(s.name) if row["error"] is None else None
        rows.append(row)
    return rows


def _route(srv: CoEServer, prompt: str) -> dict:
    """POST /v1/route: the router's decision on `prompt`, as `coeflow route --json` gives it."""
    if srv.router is None:
        raise APIError(404, "this CoE has no trained router (coeflow router train)", code="model_not_found")
    d = srv.router.route(prompt)
    return {"expert": d.expert, "confidence": d.confidence, "fell_back": d.fell_back, "top": d.top,
            "reason": d.reason, "threshold": srv.router.threshold,
            "candidates": [{"expert": e, "score": p} for e, p in d.candidates]}


async def _admin(srv: CoEServer, name: str, action: str, raw: Any) -> dict:
    """POST /v1/experts/NAME/load|unload|pin: move or pin an expert, answer its new status."""
    if name not in srv.coe.expert_names:
        raise APIError(404, f"no expert named {name!r}", code="model_not_found", param="name")
    body = parse_admin(action, raw)
    try:
        if isinstance(body, PinBody):
            await asyncio.to_thread(srv.store.pin, name, body.pinned)
        elif isinstance(body, LoadBody):
            await asyncio.to_thread(srv.health.reload, name)
            await asyncio.to_thread(srv.store.load, name, body.tier)
        else:
            await asyncio.to_thread(srv.store.unload, name, body.tier)
    except CoeflowError as e:
        raise APIError(400, srv.health.public(str(e))) from None
    return _status_dict(next(s for s in srv.store.status() if s.name == name))


def _status_dict(s: Any) -> dict:
    """An ExpertStatus as plain JSON."""
    return json.loads(json.dumps(dataclasses.asdict(s), default=str))


def _choose(srv: CoEServer, req: ParsedRequest) -> Choice:
    if req.model == ROUTED:
        if srv.router is None:
            raise APIError(404, "model 'coe' needs a trained router next to the CoE file "
                           "(coeflow router train); name an expert instead", code="model_not_found", param="model")
        t = time.perf_counter()
        d = srv.router.route(req.routing_text)
        srv.metrics.router_latency.observe(time.perf_counter() - t)
        choice = Choice(d.expert, True, d.confidence, d.fell_back, tuple(d.candidates))
        if srv.health.failure(d.expert) is not None:  # never to a failed expert: the router's next choice
            choice = choice.instead(srv) or choice
        return choice
    if req.model not in srv.coe.expert_names:
        raise APIError(404, f"model {req.model!r} does not exist: use 'coe' (routed) or one of "
                       f"{', '.join(srv.coe.expert_names)}", code="model_not_found", param="model")
    return Choice(req.model, False)


def _prepare(srv: CoEServer, body: Any, chat: bool) -> tuple[ParsedRequest, Choice, list[int]]:
    """A request's validation, routing and tokens: work that grows with its input, so run off
    the event loop, with its length checked before any of it is tokenized."""
    req = parse_request(body, chat, srv.opts.limits)
    chars = (sum(len(p) for p in req.prompts if isinstance(p, str)) if req.prompts is not None
             else sum(len(m["content"] or "") for m in req.messages or []))
    longest = max((rt.tokenizer.max_token_chars for rt in srv.runtimes.values()), default=1)
    if chars > srv.opts.limits.max_prompt_tokens * longest:
        raise bad(f"the prompt has {chars} characters, more than {srv.opts.limits.max_prompt_tokens} tokens can "
                  f"hold (--max-prompt-tokens)", "messages" if chat else "prompt")
    choice = _choose(srv, req)
    return req, choice, _prompt_ids(srv, req, choice.expert)


async def _complete(srv: CoEServer, request: Request, chat: bool) -> Response:
    """POST /v1/chat/completions and /v1/completions: validate, route, queue, then answer
    whole or as a stream."""
    arrival = srv.scheduler.clock.now()
    request.state.deadline = _deadline(srv, request)
    body = await read_json(request, srv.opts.limits.max_body_bytes)
    req, choice, prompts = await asyncio.to_thread(_prepare, srv, body, chat)
    if srv.recorder is not None:
        srv.recorder.record(arrival, req.model, req.routing_text, sum(map(len, prompts)), req.params.max_tokens,
                            route=choice.expert if choice.routed else None)
    choice, prompts, events, first = await _begin(srv, request, req, choice, prompts, arrival)
    info = {"expert": choice.expert, "routed": choice.routed, "confidence": choice.confidence,
            "fell_back": choice.fell_back, "rerouted_from": list(choice.failed),
            "source_tier": first.source_tier, "switch_s": first.switch_s,
            "queued_s": first.queued_s, "candidates": [list(c) for c in choice.candidates[:3]]}
    headers = {"x-coeflow-expert": choice.expert, "x-coeflow-source-tier": first.source_tier}
    if choice.confidence is not None:
        headers["x-coeflow-confidence"] = f"{choice.confidence:.4f}"
    if choice.failed:
        headers["x-coeflow-rerouted-from"] = ",".join(choice.failed)
    tokenizer = srv.runtimes[choice.expert].tokenizer
    tools = (ToolUse(srv.tool_formats[choice.expert], frozenset(t["function"]["name"] for t in req.tools))
             if req.tools is not None else None)
    prompt_tokens = sum(map(len, prompts))
    a = Answer(chat, ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24], info, prompt_tokens,
               req.include_usage,
               [Logprobs(tokenizer, chat) for _ in range(req.choices)] if req.params.logprobs is not None else None,
               tools)
    tracker = Timing(srv, choice.expert, arrival, prompt_tokens, request.state.request_id, first.source_tier)
    if req.stream:
        events.stop_watching()  # a streaming response watches its client itself
        return Streamed(stream(a, events, tracker), events, media_type="text/event-stream", headers=headers)
    try:
        return JSONResponse(await whole(a, events, tracker), headers=headers)
    finally:
        events.stop_watching()


TIMEOUT_HEADER = "x-request-timeout"
CONSOLE = Path(__file__).parent / "console"


def _deadline(srv: CoEServer, request: Request) -> float | None:
    """When the request must be answered by (the event loop's clock): the server's
    --request-timeout, or the client's X-Request-Timeout seconds if sooner; None: no deadline."""
    given = request.headers.get(TIMEOUT_HEADER)
    timeout = srv.opts.request_timeout_s
    if given is not None:
        try:
            seconds = float(given)
        except ValueError:
            seconds = float("nan")
        if not 0 < seconds < float("inf"):
            raise bad(f"header X-Request-Timeout must be a positive number of seconds, got {given!r}")
        timeout = seconds if timeout is None else min(timeout, seconds)
    return None if timeout is None else asyncio.get_running_loop().time() + timeout


async def _begin(srv: CoEServer, request: Request, req: ParsedRequest, choice: Choice, prompts: list[list[int]],
                 arrival: float) -> tuple[Choice, list[list[int]], Events, Started]:
    """Queue the request's sequences and wait for the first to start. A routed request whose
    expert turns out to fail when its batch loads it goes to the router's next choice that can
    serve instead."""
    while True:
        events = Events(request)
        constraints = await asyncio.to_thread(_constraints, srv, choice.expert, req)
        _submit(srv, choice.expert, prompts, req, arrival, events, constraints)
        try:
            return choice, prompts, events, await _started(srv, choice.expert, events)
        except APIError as e:
            events.stop_watching()
            other = choice.instead(srv) if e.status == 503 else None
            if other is None:
                raise
        choice = other
        prompts = await asyncio.to_thread(_prompt_ids, srv, req, choice.expert)


def _prompt_ids(srv: CoEServer, req: ParsedRequest, expert: str) -> list[list[int]]:
    """Each prompt's tokens (a chat's one), once the expert is known to serve and they fit."""
    why = srv.health.failure(expert)
    if why is not None:
        srv.metrics.requests.labels(expert, "unavailable").inc()
        raise APIError(503, f"expert {expert!r} is unavailable: {why}", "service_unavailable",
                       code="expert_unavailable")
    tokenizer = srv.runtimes[expert].tokenizer
    chat = req.messages is not None
    if chat and not tokenizer.chat_template:
        raise bad(f"expert {expert!r} has no chat template (none in its tokenizer_config.json or "
                  "chat_template.jinja): give it one in the CoE file (chat_template: FILE), or send the "
                  "prompt to /v1/completions", "messages")
    if req.tools is not None:
        _tool_format(srv, expert)  # a 400 now, when it cannot take them
    if any(t >= tokenizer.vocab_size for t, _ in req.params.logit_bias):
        raise bad(f"logit_bias names a token id outside expert {expert!r}'s vocabulary of {tokenizer.vocab_size}",
                  "logit_bias")
    if chat:
        try:
            return [_fits(srv, req, expert, tokenizer.encode_chat(req.messages, req.tools), "messages")]
        except CoeflowError as e:  # the expert's chat template refused these messages (raise_exception)
            raise bad(f"expert {expert!r}: {e}", "messages") from None
    many = len(req.prompts) > 1
    return [_fits(srv, req, expert, list(p) if isinstance(p, list) else tokenizer.encode(p),
                  f"prompt[{i}]" if many else "prompt") for i, p in enumerate(req.prompts)]


def _fits(srv: CoEServer, req: ParsedRequest, expert: str, ids: list[int], param: str) -> list[int]:
    """`ids`, a prompt the expert can take with the request's max_tokens; a 400 naming `param` if not."""
    vocab = srv.runtimes[expert].tokenizer.vocab_size
    if not ids:
        raise bad(f"'{param}' is empty after tokenisation", param)
    if max(ids) >= vocab:
        raise bad(f"'{param}' holds a token id outside expert {expert!r}'s vocabulary of {vocab}", param)
    if len(ids) > srv.opts.limits.max_prompt_tokens:
        raise bad(f"'{param}' has {len(ids)} tokens; the limit is {srv.opts.limits.max_prompt_tokens}", param)
    ctx = srv.contexts.get(expert)
    if ctx and len(ids) + req.params.max_tokens > ctx:
        raise bad(f"'{param}' ({len(ids)} tokens) + max_tokens ({req.params.max_tokens}) exceeds the "
                  f"expert's context of {ctx} tokens", "max_tokens")
    return ids


def _tool_format(srv: CoEServer, expert: str) -> ToolFormat:
    """How the expert writes tool calls; a 400 when it cannot take tools."""
    if not takes_tools(srv.runtimes[expert].tokenizer.chat_template):
        raise bad(f"expert {expert!r} cannot call tools: its chat template does not read 'tools' (give it "
                  "one that does in the CoE file, chat_template: FILE)", "tools")
    fmt = srv.tool_formats.get(expert)
    if fmt is None:
        raise bad(f"expert {expert!r}: its chat template takes tools, but in no format coeflow knows by its "
                  "markers: name it in the CoE file (tool_call_format: hermes, llama3_json or mistral)", "tools")
    return fmt


def _constraints(srv: CoEServer, expert: str, req: ParsedRequest) -> list[GrammarConstraint | None]:
    """Each choice's grammar, when the request has a response_format or must call a tool (a
    worker thread's work: the first for an expert reads its whole vocabulary)."""
    grammar, param = req.grammar, "response_format"
    if req.must_call is not None:
        param = "tools"
        try:
            grammar = call_grammar(_tool_format(srv, expert), req.tools or [],
                                   None if req.must_call == "required" else req.must_call, req.parallel_tool_calls)
        except ValueError as e:
            raise bad(f"'tools': a function's parameters {e}", param) from None
    try:
        return [GrammarConstraint(srv.runtimes[expert], grammar) if grammar else None for _ in range(req.choices)]
    except CoeflowError as e:
        raise bad(f"expert {expert!r}: {e}", param) from None


def _submit(srv: CoEServer, expert: str, prompts: list[list[int]], req: ParsedRequest, arrival: float,
            events: Events, constraints: list[GrammarConstraint | None]) -> None:
    """Queue the request's sequences, one a choice (all or none), the expert's sampling
    defaults filling the fields it left unset; their events reach `events` on this loop."""
    defaults = {k: v for k, v in srv.runtimes[expert].sampling.items() if k in req.unset}
    params = dataclasses.replace(req.params, **defaults) if defaults else req.params
    events.gens = [GenRequest(expert, prompts[k // req.n], choice_params(params, k % req.n), sink=events.sink_for(k),
                              arrival=arrival, constraint=constraints[k]) for k in range(req.choices)]
    try:
        srv.scheduler.submit_all(events.gens)
    except (QueueFullError, ShuttingDownError, InvalidRequestError) as e:
        raise _refusal(srv, expert, e) from None


def _refusal(srv: CoEServer, expert: str, e: CoeflowError) -> APIError:
    """A request its expert's scheduler would not queue, in HTTP: when it was sent (one
    process) or in its first event (an expert replica elsewhere, coeflow.cluster)."""
    if isinstance(e, QueueFullError):
        srv.metrics.requests.labels(expert, "rejected").inc()
        return APIError(429, str(e), "rate_limit_error", code="queue_full", headers={"Retry-After": "1"})
    if isinstance(e, ShuttingDownError):
        return APIError(503, str(e), "service_unavailable")
    srv.metrics.requests.labels(expert, "rejected").inc()  # e.g. longer than the expert's KV cache could ever hold
    return APIError(400, f"expert {expert!r}: {e}", param="max_tokens")


async def _started(srv: CoEServer, expert: str, events: Events) -> Started:
    """Wait for the first sequence's start (or failure) before answering, so a failed expert is
    a clean 503. (A choice's first event is its start: the others' come later, and are passed.)"""
    try:
        _, first = await events.next()
    except APIError as e:
        srv.metrics.requests.labels(expert, "timeout" if e.status == 408 else "cancelled").inc()
        raise
    if isinstance(first, Failed):
        events.cancel()
        if isinstance(first.error, (QueueFullError, ShuttingDownError, InvalidRequestError)):
            raise _refusal(srv, expert, first.error)
        srv.metrics.requests.labels(expert, "failed").inc()
        status = 503 if isinstance(first.error, CoeflowError) else 500
        raise APIError(status, f"expert {expert!r} failed: {srv.health.public(str(first.error))}",
                       "service_unavailable" if status == 503 else "server_error", code="expert_unavailable")
    assert isinstance(first, Started)
    srv.metrics.acquires.labels(first.source_tier).inc()
    srv.metrics.queued.labels(expert).observe(first.queued_s)
    if first.source_tier != "device":
        srv.metrics.switch.labels(first.source_tier).observe(first.switch_s)
    return first
