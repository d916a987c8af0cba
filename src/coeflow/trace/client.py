"""Play a trace against a running server, open loop: each request leaves at its arrival time
whatever happened to the earlier ones (a closed loop would hide queueing). Timed at the
client, as a user sees it; the server's own view (tier, switch, queueing) comes back in the
`coeflow` field of the first chunk."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass

from coeflow.trace.format import TraceRequest

FILLER = "the quick brown fox jumps over the lazy dog".split()


def prompt_text(r: TraceRequest) -> str:
    """The recorded text, or filler words of about the recorded length (token counts of
    filler depend on the tokenizer: the result rows carry the server's real count)."""
    if r.prompt is not None:
        return r.prompt
    n = r.prompt_tokens or 1
    return " ".join(FILLER[i % len(FILLER)] for i in range(n))


@dataclass
class Streamed:
    """One streamed completion as its client saw it, in seconds from the call."""
    first_s: float | None  # the first chunk with text
    last_s: float | None  # the last one
    chunks: int  # chunks with text (one a token)
    finish_reason: str | None  # None: the stream ended without finishing
    coeflow: dict | None  # the server's `coeflow` field (expert, tier, switch, queueing)

    @property
    def tpot_s(self) -> float | None:
        """Mean gap between the chunks after the first."""
        if self.first_s is None or self.last_s is None or self.chunks < 2:
            return None
        return (self.last_s - self.first_s) / (self.chunks - 1)


async def stream_completion(client, **create) -> Streamed:
    """Stream one completion (`client.completions.create(**create, stream=True)`), timing its
    chunks; errors propagate."""
    t0 = time.perf_counter()
    first = last = reason = extra = None
    n = 0
    stream = await client.completions.create(**create, stream=True)
    async for chunk in stream:
        if chunk.model_extra and chunk.model_extra.get("coeflow"):
            extra = chunk.model_extra["coeflow"]
        if chunk.choices and chunk.choices[0].text:
            last = time.perf_counter() - t0
            first = last if first is None else first
            n += 1
        if chunk.choices and chunk.choices[0].finish_reason:
            reason = chunk.choices[0].finish_reason
    return Streamed(first, last, n, reason, extra)


async def _one(client, r: TraceRequest, t0: float) -> dict:
    delay = t0 + r.arrival_s - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)
    sent = time.perf_counter()
    row = r.to_dict()
    row.update(sent_late_s=sent - t0 - r.arrival_s)
    first = None
    try:
        stream = await client.completions.create(
            model=r.expert, prompt=prompt_text(r), max_tokens=r.max_tokens, temperature=0,
            stream=True, stream_options={"include_usage": True})
        async for chunk in stream:
            extra = chunk.model_extra.get("coeflow") if chunk.model_extra else None
            if extra:
                row.update(served_by=extra["expert"], source_tier=extra["source_tier"],
                           switch_s=extra["switch_s"], queued_s=extra["queued_s"])
            if chunk.choices and chunk.choices[0].text and first is None:
                first = time.perf_counter()
            if chunk.usage:
                row.update(output_tokens=chunk.usage.completion_tokens,
                           prompt_tokens=chunk.usage.prompt_tokens)
    except Exception as e:  # a failed request is a result too
        row.update(error=f"{type(e).__name__}: {e}")
        return row
    done = time.perf_counter()
    row.update(ttft_s=(first - sent) if first else None, latency_s=done - sent)
    return row


async def _play(url: str, reqs: list[TraceRequest], api_key: str) -> list[dict]:
    from openai import AsyncOpenAI
    client = AsyncOpenAI(base_url=url, api_key=api_key, max_retries=0, timeout=600)
    t0 = time.perf_counter()
    try:
        return list(await asyncio.gather(*(_one(client, r, t0) for r in reqs)))
    finally:
        await client.close()


def play(url: str, reqs: list[TraceRequest], api_key: str = "unused") -> list[dict]:
    return asyncio.run(_play(url, reqs, api_key))


def pct(xs: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in [0, 1]); None for no data."""
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(q * (len(xs) - 1)))))]


def summarise(rows: list[dict]) -> dict:
    ok = [r for r in rows if "error" not in r]
    lat = [r["latency_s"] for r in ok]
    ttft = [r["ttft_s"] for r in ok if r.get("ttft_s") is not None]
    switches = [r["switch_s"] for r in ok if r.get("source_tier") not in (None, "device")]
    return {"requests": len(rows), "failed": len(rows) - len(ok),
            "latency_p50_s": pct(lat, 0.5), "latency_p99_s": pct(lat, 0.99),
            "ttft_p50_s": pct(ttft, 0.5), "ttft_p99_s": pct(ttft, 0.99),
            "switches": len(switches), "switch_p50_s": pct(switches, 0.5),
            "switch_mean_s": statistics.fmean(switches) if switches else None}
