"""`coeflow bench serve --workload mixed`: the serving core under the traffic that shows static
batching for what it is, in one run against each server:

- coeflow: continuous batching across experts (the default schedule);
- static: the same server with `--schedule static` (a batch runs to completion);
- baseline: static batching over a store that keeps the last few experts and reloads one with
  `transformers.from_pretrained` on a switch (what a user without coeflow would run);
- peer (when given a built `llama-server`): llama.cpp's server in router mode, the same experts
  converted to GGUF at the same dtype, one model instance per expert, each with as many
  parallel sequences as coeflow's batch (coeflow.bench.llama_peer).

Open-loop Poisson arrivals at `rate` requests/s (set it near what the servers sustain: above
it every queue grows, below it none forms), experts drawn Zipf-skewed, output lengths
log-uniform between 8 and 512 tokens (capped by the expert's context), and a third of the
requests opening with one shared 200-token system text. Each request streams through the
official `openai` client from a process of its own; TTFT and TPOT are the client's. Before
the clock starts each server answers one request per expert and a few more. After the
trace, on the idle server, 20 pairs of prompts of equal length, one opening with the shared
text (its blocks cached) and one with a text never seen, measure what a prefix hit saves."""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import random
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

from coeflow.bench.machine import machine_name
from coeflow.trace.client import pct as percentile
from coeflow.trace.client import stream_completion

MIXED_SERVERS = ("coeflow", "static", "baseline", "peer")
WORDS = ("select name from users where id group by order limit def return class import ls grep awk the fox "
         "count sum table file list print loop value").split()


@dataclass(frozen=True)
class MixedRequest:
    at_s: float  # arrival, from the start
    expert: str
    prompt: str
    max_tokens: int
    shared: bool  # opens with the shared system text


@dataclass
class MixedResult:
    requests_per_s: float
    ttft_p50_s: float
    ttft_p99_s: float
    tpot_p50_s: float
    tpot_p99_s: float
    completed: int
    failed: int
    wall_s: float
    ttft_shared_p50_s: float  # requests that open with the shared system text
    ttft_unshared_p50_s: float
    # on the idle server after the trace, one request at a time, prompts of equal length:
    prefix_hit_ttft_p50_s: float = float("nan")  # opening with the shared system text (cached)
    prefix_miss_ttft_p50_s: float = float("nan")  # opening with a text of its length never seen


def text_of(tokens: int, count: Callable[[str], int], rng: random.Random) -> str:
    """Random words, grown until `count` says they are `tokens` tokens."""
    words: list[str] = []
    while count(" ".join(words)) < tokens:
        words.append(rng.choice(WORDS))
    return " ".join(words)


def mixed_trace(experts: list[str], requests: int, rate: float, context: int, count: Callable[[str], int],
                seed: int = 0, zipf_s: float = 1.0, system_tokens: int = 200) -> list[MixedRequest]:
    """`count(text)`: the prompt's tokens as the experts' tokenizer counts them (the shared
    system text is grown to `system_tokens`, and no request asks for more than its context)."""
    rng = random.Random(seed)
    names = list(experts)
    rng.shuffle(names)  # popularity independent of the CoE file's order
    weights = [1 / (k + 1) ** zipf_s for k in range(len(names))]
    system = text_of(system_tokens, count, rng)
    out, t = [], 0.0
    for _ in range(requests):
        t += rng.expovariate(rate)
        shared = rng.random() < 1 / 3
        prompt = " ".join(rng.choices(WORDS, k=rng.randint(4, 24)))
        prompt = f"{system}\n{prompt}" if shared else prompt
        n = int(math.exp(rng.uniform(math.log(8), math.log(512))))
        out.append(MixedRequest(t, rng.choices(names, weights)[0], prompt,
                                max(1, min(n, context - count(prompt) - 4)), shared))
    return out


def pct(xs: list[float], q: float) -> float:
    """The percentile of the numbers among `xs` (a failed request's NaN left out); NaN for none."""
    p = percentile(sorted(x for x in xs if not math.isnan(x)), q)
    return float("nan") if p is None else p


async def _play(url: str, trace: list[MixedRequest]) -> MixedResult:
    from openai import AsyncOpenAI
    client = AsyncOpenAI(base_url=url, api_key="bench", max_retries=0, timeout=900)
    ttft: list[tuple[float, bool]] = []
    tpot: list[float] = []
    failed = 0
    start = time.perf_counter()

    async def one(r: MixedRequest) -> None:
        nonlocal failed
        await asyncio.sleep(max(0.0, start + r.at_s - time.perf_counter()))
        try:
            got = await stream_completion(client, model=r.expert, prompt=r.prompt, max_tokens=r.max_tokens,
                                          temperature=0, extra_body={"ignore_eos": True})
        except Exception:  # noqa: BLE001  any error is a failed request, counted
            failed += 1
            return
        if got.finish_reason is None or got.first_s is None:
            failed += 1
            return
        ttft.append((got.first_s, r.shared))
        if got.tpot_s is not None:
            tpot.append(got.tpot_s)

    await asyncio.gather(*(one(r) for r in trace))
    wall = time.perf_counter() - start
    await client.close()
    all_ttft = [t for t, _ in ttft]
    return MixedResult(len(ttft) / wall, pct(all_ttft, 0.5), pct(all_ttft, 0.99), pct(tpot, 0.5), pct(tpot, 0.99),
                       len(ttft), failed, wall, pct([t for t, s in ttft if s], 0.5),
                       pct([t for t, s in ttft if not s], 0.5))


async def _ttft(client, expert: str, prompt: str) -> float:
    """NaN when the request failed (left out of the percentiles)."""
    try:
        got = await stream_completion(client, model=expert, prompt=prompt, max_tokens=2, temperature=0,
                                      extra_body={"ignore_eos": True})
    except Exception:  # noqa: BLE001  a failed pair is left out, not the end of the run
        return float("nan")
    return got.first_s if got.first_s is not None else float("nan")


async def _prefix_pairs(url: str, pairs: list[tuple[str, str, str]]) -> tuple[float, float]:
    """TTFT p50 of (expert, cached prompt, uncached prompt) pairs, one request at a time."""
    from openai import AsyncOpenAI
    client = AsyncOpenAI(base_url=url, api_key="bench", max_retries=0, timeout=900)
    hits, misses = [], []
    for expert, hit, miss in pairs:
        hits.append(await _ttft(client, expert, hit))
        misses.append(await _ttft(client, expert, miss))
    await client.close()
    return pct(hits, 0.5), pct(misses, 0.5)


def _play_blocking(url: str, trace: list[MixedRequest], pairs: list[tuple[str, str, str]]) -> MixedResult:
    try:
        result = asyncio.run(_play(url, trace))
        if pairs:
            result.prefix_hit_ttft_p50_s, result.prefix_miss_ttft_p50_s = asyncio.run(_prefix_pairs(url, pairs))
    except Exception as e:  # noqa: BLE001  the openai client's errors do not cross a process boundary
        raise RuntimeError(f"{type(e).__name__}: {e}") from None
    return result


def run_mixed(coe: Path, requests: int = 200, rate: float = 4.0, engine: str = "fused", seed: int = 0,
              baseline_slots: int = 2, servers: tuple[str, ...] = MIXED_SERVERS, slice_s: float | None = None,
              prefix_cache: bool = True, peer_server: Path | None = None, peer_models: Path | None = None,
              peer_threads: int | None = None, progress: Callable[[str], None] = lambda s: None) -> dict:
    """`slice_s`, `prefix_cache`: coeflow's --slice (None: the server's default) and prefix cache.
    `peer_server`: a built llama-server (the peer runs only with it); `peer_models`: where its
    GGUF files go (default: gguf/ beside the CoE file); `peer_threads`: each model's threads
    (None: llama.cpp's default)."""
    from coeflow.coefile import load_coe
    from coeflow.model import ModelConfig, Tokenizer
    spec = load_coe(coe)
    context = min(ModelConfig.from_dir(e.path).max_position_embeddings for e in spec.experts)
    tokenizers = [Tokenizer.from_dir(e.path) for e in spec.experts]

    def count(text: str) -> int:
        return max(len(t.encode(text)) for t in tokenizers)
    trace = mixed_trace(spec.expert_names, requests, rate, context, count, seed)
    warm = [MixedRequest(0.0, name, "hello", 4, False) for name in spec.expert_names]  # every model loaded
    warm += mixed_trace(spec.expert_names, 8, 100.0, context, count, seed + 1)
    rng = random.Random(seed + 2)
    shared = next((r for r in trace if r.shared), None)
    system = shared.prompt.split("\n")[0] if shared else text_of(200, count, rng)
    pairs = [(trace[i % len(trace)].expert, f"{system}\n{i} {rng.choice(WORDS)}",
              f"{text_of(count(system), count, rng)}\n{i} {rng.choice(WORDS)}") for i in range(20)]
    from coeflow.scheduler import SLICE_S
    report: dict = {"machine": machine_name(), "workload": "mixed", "coe": str(coe), "requests": requests,
                    "slice_s": SLICE_S if slice_s is None else slice_s, "prefix_cache": prefix_cache,
                    "rate_per_s": rate, "engine": engine, "peer_threads": peer_threads,
                    "servers": [s for s in MIXED_SERVERS if s in servers and (s != "peer" or peer_server)],
                    "shared_requests": sum(r.shared for r in trace),
                    "output_tokens_mean": sum(r.max_tokens for r in trace) / len(trace)}
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    try:
        for label in report["servers"]:
            if label == "peer":
                server = _peer(spec, Path(peer_server), peer_models or Path(coe).parent / "gguf", context, peer_threads,
                               progress)
            else:
                server = _coeflow(coe, spec, label, engine, baseline_slots, slice_s, prefix_cache, progress)
            with server as url:
                pool.submit(_play_blocking, url, warm, []).result()
                progress(f"{label}: {requests} requests at {rate}/s, then 20 pairs of prompts with and without "
                         "a cached prefix")
                report[label] = asdict(pool.submit(_play_blocking, url, trace, pairs).result())
        return report
    finally:
        pool.shutdown()


@contextlib.contextmanager
def _coeflow(coe: Path, spec, label: str, engine: str, baseline_slots: int, slice_s: float | None,
             prefix_cache: bool, progress: Callable[[str], None]) -> Iterator[str]:
    """coeflow as `label` (coeflow, static or baseline), warmed up, serving on loopback."""
    from coeflow.bench.naive_store import ReloadingStore
    from coeflow.model import resolve_device
    from coeflow.server import ServerOptions, build_server, serving
    opts = ServerOptions(fused=engine == "fused", schedule="continuous" if label == "coeflow" else "static",
                         prefix_cache=prefix_cache or label != "coeflow",
                         **({"slice_s": slice_s} if slice_s is not None and label == "coeflow" else {}))
    naive = ReloadingStore(spec, baseline_slots, device=str(resolve_device(opts.device))) if label == "baseline" else None
    srv = build_server(coe, opts, store=naive)
    warm, srv.warm_up = srv.warm_up, []  # compiled below, before the clock starts
    with serving(srv) as url:
        progress(f"{label}: warm-up")
        srv.scheduler.warm_up(warm)
        yield url


@contextlib.contextmanager
def _peer(spec, server: Path, models: Path, context: int, threads: int | None,
          progress: Callable[[str], None]) -> Iterator[str]:
    """llama-server in router mode over the experts in GGUF, at coeflow's dtype, each model with
    coeflow's largest batch of parallel sequences."""
    from coeflow.bench.llama_peer import convert_experts, llama_router, llama_tree
    from coeflow.scheduler import MAX_BATCH
    from coeflow.backend.real.layout import plan_layout
    from coeflow.model import dtype_name
    from coeflow.server import free_port
    dtype = dtype_name(plan_layout(spec.experts[0].path, None).dtype)  # what coeflow serves them in: their own
    folder = convert_experts(llama_tree(server), {e.name: e.path for e in spec.experts}, models / dtype, dtype,
                             progress)
    progress("peer: llama-server (router mode), loading every expert")
    with llama_router(server, folder, len(spec.experts), free_port(), MAX_BATCH, context, threads,
                      models / "llama-server.log") as url:
        yield url


def format_mixed(r: dict) -> str:
    lines = [f"machine: {r['machine']}",
             f"mixed workload on {r['coe']}: {r['requests']} requests, Poisson at {r['rate_per_s']}/s, "
             f"{r['shared_requests']} with a shared 200-token system text, outputs 8-512 tokens "
             f"(mean {r['output_tokens_mean']:.0f}), engine {r['engine']}",
             f"{'':10} {'req/s':>7} {'TTFT p50':>9} {'TTFT p99':>9} {'TPOT p50':>9} {'TPOT p99':>9} {'done':>5} "
             f"{'failed':>6}"]
    for label in r["servers"]:
        x = r[label]
        lines.append(f"{label:10} {x['requests_per_s']:7.2f} {x['ttft_p50_s']:8.3f}s {x['ttft_p99_s']:8.3f}s "
                     f"{x['tpot_p50_s'] * 1e3:7.1f}ms {x['tpot_p99_s'] * 1e3:7.1f}ms {x['completed']:5d} "
                     f"{x['failed']:6d}")
    for label in r["servers"]:
        x = r[label]
        lines.append(f"{label}: idle, a prompt opening with the cached 200-token text: TTFT p50 "
                     f"{x['prefix_hit_ttft_p50_s'] * 1e3:.1f} ms; one of equal length never seen: "
                     f"{x['prefix_miss_ttft_p50_s'] * 1e3:.1f} ms")
    for other in ("static", "peer"):
        if "coeflow" in r and other in r:
            c, s = r["coeflow"], r[other]
            lines.append(f"coeflow vs {other}: {c['requests_per_s'] / s['requests_per_s']:.2f}x req/s, p99 TTFT "
                         f"{c['ttft_p99_s'] / s['ttft_p99_s']:.2f}x, p99 TPOT {c['tpot_p99_s'] / s['tpot_p99_s']:.2f}x")
    return "\n".join(lines)
