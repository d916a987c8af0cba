"""`coeflow bench serve`: a bounded load on loopback (Zipf over experts), in one run, against
four servers that differ only in how experts reach the engine (same HTTP server, scheduler,
engine and experts):

- coeflow: the tiered store; the host tier holds every expert, the device tier a few.
- coeflow-no-host-tier: the same store with a host tier no larger than the device tier, so
  an expert that leaves the device is read from disk again (by coeflow's chunked loader).
- baseline: what a user without a tiered store does: keep the last few experts, and on a
  miss reload one with `transformers.from_pretrained` on the request path.
- ceiling: the device tier holds every expert, loaded before the clock starts, so nothing is
  ever switched: the most any store could get from this machine, engine and traffic.
Disk reads hit a warm page cache here, so both reload figures are best cases.

The load generator runs in a process of its own (as a server's clients would): in the
server's process its streaming client would share the interpreter lock with the HTTP
server and the scheduler (`client="thread"` still does that, to compare)."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import yaml

from coeflow.bench.experts import make_expert
from coeflow.bench.machine import machine_name
from coeflow.trace.client import pct as percentile
from coeflow.trace.client import stream_completion

# Random-weight Llama experts (fp32 on disk). 100MB suits a CPU; on a GPU, where decoding is
# fast, 1.2GB is closer to what the experts of a CoE weigh (the paper's are 7B models).
EXPERT_SIZES: dict[str, dict] = {
    "100MB": dict(vocab_size=400, hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
                  num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=1024),
    "1.2GB": dict(vocab_size=400, hidden_size=1536, intermediate_size=4096, num_hidden_layers=12,
                  num_attention_heads=12, num_key_value_heads=4, max_position_embeddings=1024),
}
SERVERS = ("coeflow", "coeflow_no_host_tier", "baseline", "ceiling")
WORDS = "select name from users where id group by order limit def return class import ls grep awk the fox".split()


@dataclass
class RunResult:
    requests_per_s: float
    ttft_p50_s: float
    ttft_p99_s: float
    tpot_p50_s: float
    completed: int
    failed: int
    wall_s: float
    served_from: dict[str, int]  # requests by the tier their expert was in when their batch ran


def build_coe(root: Path, experts: int, size: str = "100MB") -> Path:
    for i in range(experts):
        make_expert(root / f"e{i}", EXPERT_SIZES[size], seed=100 + i)
    doc = {"name": "bench", "fallback": "e0",
           "experts": [{"name": f"e{i}", "path": f"e{i}", "description": f"expert {i}"} for i in range(experts)]}
    (root / "coe.yaml").write_text(yaml.safe_dump(doc))
    return root / "coe.yaml"


def zipf_trace(n: int, experts: int, s: float, seed: int) -> list[str]:
    rng = random.Random(seed)
    weights = [1 / (k + 1) ** s for k in range(experts)]
    names = [f"e{i}" for i in range(experts)]
    rng.shuffle(names)  # popularity independent of load order
    return rng.choices(names, weights, k=n)


async def _load(url: str, trace: list[str], concurrency: int, max_tokens: int, seed: int) -> RunResult:
    from openai import AsyncOpenAI
    client = AsyncOpenAI(base_url=url, api_key="bench", max_retries=0, timeout=600)
    rng = random.Random(seed)
    prompts = [" ".join(rng.choices(WORDS, k=rng.randint(4, 24))) for _ in trace]
    todo = list(enumerate(trace))
    ttft, tpot, tiers = [], [], {}
    failed = 0

    async def worker() -> None:
        nonlocal failed
        while todo:
            i, expert = todo.pop(0)
            try:
                got = await stream_completion(client, model=expert, prompt=prompts[i], max_tokens=max_tokens,
                                              temperature=0)
            except Exception:
                failed += 1
                continue
            if got.coeflow:  # the first chunk's: where the request's expert was
                tiers[got.coeflow["source_tier"]] = tiers.get(got.coeflow["source_tier"], 0) + 1
            if got.finish_reason is None:  # the stream ended without finishing: lost
                failed += 1
                continue
            if got.first_s is None:  # finished at once (EOS first): no token to time
                continue
            ttft.append(got.first_s)
            if got.tpot_s is not None:
                tpot.append(got.tpot_s)

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t
    await client.close()
    done = len(trace) - failed
    def pct(xs: list[float], q: float) -> float:
        p = percentile(xs, q)  # None when nothing was timed
        return float("nan") if p is None else p
    return RunResult(done / wall, pct(ttft, 0.5), pct(ttft, 0.99), pct(tpot, 0.5), done, failed, wall, tiers)


def _load_blocking(url: str, trace: list[str], concurrency: int, max_tokens: int, seed: int) -> RunResult:
    return asyncio.run(_load(url, trace, concurrency, max_tokens, seed))


def run(requests: int = 300, concurrency: int = 16, experts: int = 8, device_slots: int = 2,
        zipf_s: float = 1.0, max_tokens: int = 16, engine: str = "fused", expert_size: str = "100MB",
        servers: tuple[str, ...] = SERVERS, client: str = "process", workdir: Path | None = None,
        progress: Callable[[str], None] = lambda s: None) -> dict:
    """`client`: "process" runs the load generator in a process of its own, "thread" in this
    one (sharing the interpreter with the server)."""
    from coeflow.server import Limits, ServerOptions, build_server, serving
    tmp = tempfile.TemporaryDirectory() if workdir is None else None
    root = Path(tmp.name) if tmp else Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    pool = (ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
            if client == "process" else None)

    def load(url: str, trace: list[str], concurrency: int, seed: int) -> RunResult:
        if pool is None:
            return _load_blocking(url, trace, concurrency, max_tokens, seed)
        return pool.submit(_load_blocking, url, trace, concurrency, max_tokens, seed).result()
    try:
        progress(f"writing {experts} random-weight experts to {root}")
        coe = build_coe(root, experts, expert_size)
        expert_bytes = sum(f.stat().st_size for f in (root / "e0").glob("*.safetensors"))
        trace = zipf_trace(requests, experts, zipf_s, seed=0)
        report: dict = {"machine": machine_name(), "requests": requests, "concurrency": concurrency,
                        "experts": experts, "expert_mb": expert_bytes / 1e6, "device_slots": device_slots,
                        "zipf_s": zipf_s, "max_tokens": max_tokens, "engine": engine,
                        "servers": [s for s in SERVERS if s in servers], "client": client}
        from coeflow.bench.naive_store import ReloadingStore
        from coeflow.coefile import load_coe
        from coeflow.model import resolve_device
        for label in report["servers"]:
            slots = experts if label == "ceiling" else device_slots
            progress(f"{label}: starting the server (device tier {slots} experts)")
            dev_mem = slots * expert_bytes + slots * (1 << 20)
            # every request names its max_tokens, so the default only sets which cache length
            # the warm-up compiles: the one the traffic uses
            opts = ServerOptions(device_mem=dev_mem, host_mem=dev_mem if label == "coeflow_no_host_tier" else None,
                                 fused=engine == "fused", limits=Limits(default_max_tokens=max_tokens))
            naive = (ReloadingStore(load_coe(coe), device_slots, device=str(resolve_device(opts.device)))
                     if label == "baseline" else None)
            srv = build_server(coe, opts, store=naive)
            warm, srv.warm_up = srv.warm_up, []  # compiled below, before the clock starts
            with serving(srv) as url:
                progress(f"{label}: warm-up (compiles the decode step for each batch size)")
                srv.scheduler.warm_up(warm)
                load(url, [f"e{i}" for i in range(experts)] if label == "ceiling" else ["e0"], 1, seed=1)
                progress(f"{label}: {requests} requests, {concurrency} concurrent")
                report[label] = asdict(load(url, trace, concurrency, seed=2))
        return report
    finally:
        if pool is not None:
            pool.shutdown()
        if tmp:
            tmp.cleanup()


def format_table(r: dict) -> str:
    lines = [f"machine: {r['machine']}",
             f"{r['requests']} requests, {r['concurrency']} concurrent, Zipf s={r['zipf_s']} over {r['experts']} "
             f"experts of {r['expert_mb']:.0f} MB, device tier {r['device_slots']} experts, "
             f"{r['max_tokens']} tokens each, engine {r['engine']}, client in "
             f"{'its own process' if r.get('client', 'thread') == 'process' else 'the server process'}",
             f"{'':21} {'req/s':>7} {'TTFT p50':>9} {'TTFT p99':>9} {'TPOT p50':>9} {'done':>5} {'failed':>6}  served from"]
    for label in r.get("servers", SERVERS):
        x = r[label]
        lines.append(f"{label:21} {x['requests_per_s']:7.2f} {x['ttft_p50_s']:8.3f}s {x['ttft_p99_s']:8.3f}s "
                     f"{x['tpot_p50_s'] * 1e3:7.1f}ms {x['completed']:5d} {x['failed']:6d}  {x['served_from']}")
    if "coeflow" in r and "baseline" in r:
        c, b = r["coeflow"], r["baseline"]
        top = (f" (no switches at all: {r['ceiling']['requests_per_s'] / b['requests_per_s']:.2f}x)"
               if "ceiling" in r else "")
        lines.append(f"throughput {c['requests_per_s'] / b['requests_per_s']:.2f}x the baseline{top}; "
                     f"p99 TTFT {b['ttft_p99_s'] / c['ttft_p99_s']:.2f}x lower")
    return "\n".join(lines)
