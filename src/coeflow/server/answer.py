"""How a request's answer is written once its sequences run: their events carried from the
scheduler's thread to the event loop, then one JSON body (`whole`) or a stream of SSE chunks
(`stream`) in OpenAI's shapes, with `n` choices (one sequence each), log-probabilities when
asked, the request's metrics, and its end on a deadline or when its client goes away."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from coeflow.engine import Delta
from coeflow.scheduler import Failed, Finished, GenRequest, ShuttingDownError
from coeflow.server.protocol import APIError
from coeflow.server.stats import RequestRecord
from coeflow.server.tools import ToolUse

log = logging.getLogger("coeflow.server.app")  # the request log lines, where operators look for them


def failure(ev: Failed) -> APIError:
    """A generation that failed after it started: the server's fault, never the client's."""
    shutting = isinstance(ev.error, ShuttingDownError)
    return APIError(503 if shutting else 500, f"generation failed: {ev.error}",
                    "service_unavailable" if shutting else "server_error")


def timed_out() -> APIError:
    return APIError(408, "the request was not answered before its deadline (--request-timeout or "
                    "X-Request-Timeout); it was cancelled", "timeout_error", code="request_timeout")


class Events:
    """A request's events, (choice index, event), from the scheduler's thread, on the event
    loop; and its client, whose going away (or the request's deadline passing) cancels its
    sequences the moment the server hears of it, whether or not tokens keep coming."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.queue: asyncio.Queue = asyncio.Queue()
        self.loop = asyncio.get_running_loop()
        self.deadline: float | None = getattr(request.state, "deadline", None)
        self.gens: list[GenRequest] = []  # the request's sequences, one a choice
        self._gone: asyncio.Future | None = None

    def sink_for(self, index: int) -> Callable[[Any], None]:
        """Choice `index`'s sink, called on the scheduler's thread."""
        return lambda ev: self.loop.call_soon_threadsafe(self.queue.put_nowait, (index, ev))

    def left_s(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - self.loop.time())

    def cancel(self) -> None:
        """Every sequence of the request: their blocks go back to the pool at the next step."""
        for gen in self.gens:
            gen.cancelled.set()

    async def _client_gone(self) -> None:
        while (await self.request.receive())["type"] != "http.disconnect":
            pass

    def stop_watching(self) -> None:
        """Before the response is sent (a streaming one listens to the connection itself)."""
        if self._gone is not None:
            self._gone.cancel()
            self._gone = None

    async def next(self) -> tuple[int, Any]:
        if self._gone is None:
            self._gone = asyncio.ensure_future(self._client_gone())
        get = asyncio.ensure_future(self.queue.get())
        try:
            await asyncio.wait({get, self._gone}, timeout=self.left_s(), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            get.cancel()
            self.cancel()
            raise
        if get.done():
            return get.result()
        get.cancel()
        self.cancel()
        if not self._gone.done():
            raise timed_out()
        raise APIError(499, "client disconnected")


class Logprobs:
    """One choice's token log-probabilities as OpenAI writes them: chat's `content` entries
    (token, logprob, bytes, top_logprobs), or completions' parallel lists with character
    offsets. Collected per Delta, taken when a chunk or the answer is written."""

    def __init__(self, tokenizer: Any, chat: bool) -> None:
        self.tokenizer, self.chat = tokenizer, chat
        self.entries: list[dict] = []
        self.offset = 0  # characters of the completion before the entries not taken yet

    def _piece(self, token_id: int, logprob: float) -> dict:
        text = self.tokenizer.decode([token_id])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    def add(self, d: Delta) -> None:
        if d.logprob is not None:
            entry = self._piece(d.token_id, d.logprob)
            entry["top_logprobs"] = [self._piece(t, lp) for t, lp in d.top_logprobs]
            self.entries.append(entry)

    def take(self) -> dict:
        entries, self.entries = self.entries, []
        if self.chat:
            return {"content": entries, "refusal": None}
        offsets = []
        for e in entries:
            offsets.append(self.offset)
            self.offset += len(e["token"])
        return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
                "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
                "text_offset": offsets}


class Timing:
    """A request's time to first token and time per output token (of its first choice), its
    outcome and token counts, into the metrics and one log line."""

    def __init__(self, srv: Any, expert: str, arrival: float, prompt_tokens: int, request_id: str,
                 source_tier: str):
        self.srv, self.expert, self.arrival, self.request_id = srv, expert, arrival, request_id
        self.source_tier = source_tier
        self.prompt_tokens = prompt_tokens
        self.first: float | None = None
        self.last = arrival
        self.timed = 0  # the first choice's tokens
        srv.metrics.prompt_tokens.labels(expert).inc(prompt_tokens)

    def token(self, index: int) -> None:
        if index:
            return
        self.timed += 1
        self.last = self.srv.scheduler.clock.now()
        if self.first is None:
            self.first = self.last
            self.srv.metrics.ttft.labels(self.expert).observe(self.first - self.arrival)

    def done(self, outcome: str, completion_tokens: int) -> None:
        m = self.srv.metrics
        m.requests.labels(self.expert, outcome).inc()
        m.completion_tokens.labels(self.expert).inc(completion_tokens)
        tpot = (self.last - self.first) / (self.timed - 1) if self.first is not None and self.timed > 1 else None
        if tpot is not None:
            m.tpot.labels(self.expert).observe(tpot)
        if outcome == "ok":
            m.latency.labels(self.expert).observe(self.last - self.arrival)
        now = self.srv.scheduler.clock.now()
        self.srv.recent.add(RequestRecord(now, self.expert, outcome == "ok",
                                          None if self.first is None else self.first - self.arrival, tpot,
                                          completion_tokens, self.source_tier))
        log.info("request %s: %s on %s, %d prompt + %d completion tokens, %.3f s", self.request_id, outcome,
                 self.expert, self.prompt_tokens, completion_tokens, now - self.arrival)


@dataclass
class Answer:
    """What a request's answer is made of besides its events."""
    chat: bool
    rid: str  # the response's id
    info: dict  # coeflow's own field: expert, routing, tier, queueing
    prompt_tokens: int
    include_usage: bool
    logprobs: list[Logprobs] | None  # one a choice, when asked
    tools: ToolUse | None = None  # the request offers tools: answers are read for calls

    def usage(self, completion_tokens: int) -> dict:
        p = self.prompt_tokens
        return {"prompt_tokens": p, "completion_tokens": completion_tokens, "total_tokens": p + completion_tokens}

    def usage_chunk(self, created: int, completion_tokens: int) -> bytes:
        """A stream's last chunk before [DONE], when the client asked for usage."""
        c = {"id": self.rid, "object": "chat.completion.chunk" if self.chat else "text_completion",
             "created": created, "model": self.info["expert"], "choices": [], "usage": self.usage(completion_tokens)}
        return f"data: {json.dumps(c)}\n\n".encode()


class Streamed(StreamingResponse):
    """A streamed answer whose sequences are cancelled however it ends: also when the client
    leaves before its first chunk, when `stream`'s own cleanup never runs (it never started)."""

    def __init__(self, content: AsyncIterator[bytes], events: Events, **kw: Any) -> None:
        super().__init__(content, **kw)
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.events.cancel()  # a no-op for sequences that finished


async def whole(a: Answer, events: Events, tracker: Timing) -> dict[str, Any]:
    """The non-streamed answer: every choice's tokens, then one body."""
    n = len(events.gens)
    texts: list[list[str]] = [[] for _ in range(n)]
    reasons: list[str | None] = [None] * n
    counts = [0] * n
    while None in reasons:
        try:
            i, ev = await events.next()
        except APIError as e:
            tracker.done("timeout" if e.status == 408 else "cancelled", 0)
            raise
        if isinstance(ev, Delta):
            tracker.token(i)
            texts[i].append(ev.text)
            if a.logprobs:
                a.logprobs[i].add(ev)
        elif isinstance(ev, Finished):
            reasons[i], counts[i] = ev.reason, ev.completion_tokens
        elif isinstance(ev, Failed):
            events.cancel()
            tracker.done("failed", 0)
            raise failure(ev)
    tracker.done("ok", sum(counts))
    choices = []
    for i in range(n):
        lp = a.logprobs[i].take() if a.logprobs else None
        text = "".join(texts[i])
        if not a.chat:
            choices.append({"index": i, "text": text, "finish_reason": reasons[i], "logprobs": lp})
            continue
        message: dict[str, Any] = {"role": "assistant", "content": text}
        calls = a.tools.parse(text) if a.tools else None
        if calls is not None:
            message = {"role": "assistant", "content": calls[0].strip() or None, "tool_calls": calls[1]}
            reasons[i] = "tool_calls" if reasons[i] == "stop" else reasons[i]
        choices.append({"index": i, "message": message, "finish_reason": reasons[i], "logprobs": lp})
    return {"id": a.rid, "object": "chat.completion" if a.chat else "text_completion", "created": int(time.time()),
            "model": a.info["expert"], "coeflow": a.info, "choices": choices, "usage": a.usage(sum(counts))}


async def stream(a: Answer, events: Events, tracker: Timing) -> AsyncIterator[bytes]:
    """The streamed answer: each choice's text as it comes, in SSE chunks."""
    created = int(time.time())
    obj = "chat.completion.chunk" if a.chat else "text_completion"

    def chunk(i: int, text: str | None, reason: str | None, first: bool = False, calls: list[dict] = ()) -> bytes:
        if a.chat:
            delta = {"role": "assistant", "content": text or ""} if first else ({"content": text} if text else {})
            if calls:
                delta["tool_calls"] = [{"index": k, **c} for k, c in enumerate(calls)]
            choice = {"index": i, "delta": delta, "finish_reason": reason, "logprobs": None}
        else:
            choice = {"index": i, "text": text or "", "finish_reason": reason, "logprobs": None}
        if a.logprobs and not first:  # the tokens since the choice's last chunk
            choice["logprobs"] = a.logprobs[i].take()
        c: dict[str, Any] = {"id": a.rid, "object": obj, "created": created, "model": a.info["expert"],
                             "choices": [choice]}
        if first and i == 0:
            c["coeflow"] = a.info
        return f"data: {json.dumps(c)}\n\n".encode()

    n = len(events.gens)
    counts: list[int | None] = [None] * n  # tokens of each finished choice
    held = [a.tools.stream() for _ in range(n)] if a.tools and a.chat else None  # text that may be a call
    ended = False
    try:
        for i in range(n):
            yield chunk(i, "", None, first=True)
        while None in counts:
            try:
                i, ev = await asyncio.wait_for(events.queue.get(), events.left_s())
            except asyncio.TimeoutError:
                events.cancel()
                tracker.done("timeout", 0)
                ended = True
                yield f"data: {json.dumps(timed_out().body())}\n\n".encode()
                break
            if isinstance(ev, Delta):
                tracker.token(i)
                if a.logprobs:
                    a.logprobs[i].add(ev)
                text = held[i].feed(ev.text) if held else ev.text
                if text:
                    yield chunk(i, text, None)
            elif isinstance(ev, Finished):
                counts[i] = ev.completion_tokens
                reason = ev.reason
                if held:
                    rest, calls = held[i].finish()
                    if rest:
                        yield chunk(i, rest, None)
                    if calls:
                        yield chunk(i, None, None, calls=calls)
                        reason = "tool_calls" if reason == "stop" else reason
                yield chunk(i, None, reason)
            elif isinstance(ev, Failed):
                events.cancel()
                tracker.done("failed", 0)
                ended = True
                yield f"data: {json.dumps(failure(ev).body())}\n\n".encode()
                break
        if not ended:
            ended = True
            tracker.done("ok", sum(c or 0 for c in counts))
            if a.include_usage:
                yield a.usage_chunk(created, sum(c or 0 for c in counts))
        yield b"data: [DONE]\n\n"
    finally:
        if not ended:  # the client went away mid-stream: free its sequences' slots in the batch
            events.cancel()
            tracker.done("cancelled", 0)
