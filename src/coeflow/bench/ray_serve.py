"""`coeflow bench serve --ray`: one CoE and one Zipf trace, served in one run by one process
(`single`, with the memory of the whole cluster: the replicas' tier budgets added up) and by Ray
Serve over a cluster of `nodes` nodes started on this machine (`ray`: the ingress on the head
node, one expert replica on each worker node), then on Ray again with one replica killed halfway
through the trace (`killed_replica`).

Each block: requests/s, TTFT p50/p99, completed and failed, from bench.serve's load generator
in a process of its own. On Ray also:
- `affinity_hit_rate`: the share of requests whose expert was already in their replica's
  memory (host or device tier) when they reached it, as the server reports (`source_tier`);
- `overhead_p50_ms`: what Ray adds to a request, Serve's HTTP proxy, the ingress-to-replica
  call and the events relayed back: the p50 TTFT of requests sent one at a time to an expert
  in memory, on Ray minus in one process running with a replica's threads.
`killed_replica`: the replica with the most requests queued and running is killed halfway;
completed, `resent` (sent to another replica because theirs was lost before they started, from
the ingress's metrics), failed, and how soon Ray Serve replaced the replica."""

from __future__ import annotations

import multiprocessing
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import httpx

from coeflow.bench.machine import machine_name
from coeflow.bench.serve import RunResult, _load_blocking, build_coe, zipf_trace

MB = 1 << 20


def _probe_ttft_ms(load: Callable, url: str, expert: str, n: int) -> float:
    """p50 TTFT of `n` requests sent one at a time (concurrency 1) to `expert`."""
    return load(url, [expert] * n, 1, seed=3).ttft_p50_s * 1e3


def _resent(url: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families
    text = httpx.get(url.removesuffix("/v1") + "/metrics", timeout=30).text
    return sum(s.value for f in text_string_to_metric_families(text) if f.name == "coeflow_requests_resent"
               for s in f.samples if s.name.endswith("_total"))


def _affinity(r: RunResult) -> float:
    seen = sum(r.served_from.values())
    return (r.served_from.get("device", 0) + r.served_from.get("host", 0)) / seen if seen else float("nan")


def run(requests: int = 300, concurrency: int = 16, nodes: int = 3, experts: int = 8, expert_size: str = "100MB",
        device_slots: int = 2, host_slots: int = 5, zipf_s: float = 1.0, max_tokens: int = 16,
        engine: str = "eager", probes: int = 40, workdir: Path | None = None,
        progress: Callable[[str], None] = lambda s: None) -> dict:
    """`host_slots`: experts each replica's host tier holds; `device_slots`: its device tier
    (the single process holds the replicas' total)."""
    import ray
    import torch
    from ray import serve

    from coeflow.cluster.deploy import APP, application, local_cluster, shutdown
    from coeflow.cluster.mailbox import mailbox
    from coeflow.server import Limits, ServerOptions, build_server, serving
    tmp = tempfile.TemporaryDirectory() if workdir is None else None
    root = Path(tmp.name) if tmp else Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))

    def load(url: str, trace: list[str], conc: int, seed: int) -> RunResult:
        return pool.submit(_load_blocking, url, trace, conc, max_tokens, seed).result()
    replicas, threads = nodes - 1, 1
    try:
        progress(f"writing {experts} random-weight experts to {root}")
        coe = build_coe(root, experts, expert_size)
        expert_bytes = sum(f.stat().st_size for f in (root / "e0").glob("*.safetensors"))
        trace = zipf_trace(requests, experts, zipf_s, seed=0)
        popular = max(set(trace), key=trace.count)
        def budgets(servers: int) -> ServerOptions:
            return ServerOptions(device_mem=servers * device_slots * (expert_bytes + MB),
                                 host_mem=servers * host_slots * (expert_bytes + MB), fused=engine == "fused",
                                 warm_up=engine == "fused", limits=Limits(default_max_tokens=max_tokens))
        report: dict = {"machine": machine_name(), "requests": requests, "concurrency": concurrency, "nodes": nodes,
                        "replicas": replicas, "replica_threads": threads, "single_threads": torch.get_num_threads(),
                        "experts": experts, "expert_mb": expert_bytes / 1e6, "device_slots": device_slots,
                        "host_slots": host_slots, "zipf_s": zipf_s, "max_tokens": max_tokens, "engine": engine}

        progress("single: one process, every core, the cluster's memory")
        srv = build_server(coe, budgets(replicas))
        if srv.warm_up:
            srv.scheduler.warm_up(srv.warm_up)
            srv.warm_up = []
        with serving(srv) as url:
            load(url, [popular], 1, seed=1)
            all_threads = torch.get_num_threads()
            torch.set_num_threads(threads)  # the probe compares like with like: a replica's threads
            single_probe = _probe_ttft_ms(load, url, popular, probes)
            torch.set_num_threads(all_threads)
            progress(f"single: {requests} requests, {concurrency} concurrent")
            report["single"] = asdict(load(url, trace, concurrency, seed=2))
        srv.store.close()

        progress(f"ray: starting a cluster of {nodes} nodes on this machine")
        with local_cluster(replicas, threads) as local:
            url = f"http://127.0.0.1:{local.port}/v1"
            serve.run(application(coe, budgets(1), replicas, replica_cpus=threads), name=APP, route_prefix="/")
            load(url, [popular], 1, seed=1)
            overhead = _probe_ttft_ms(load, url, popular, probes) - single_probe
            progress(f"ray: {requests} requests, {concurrency} concurrent")
            result = load(url, trace, concurrency, seed=2)
            report["ray"] = asdict(result) | {
                "affinity_hit_rate": _affinity(result), "overhead_p50_ms": overhead,
                "probe_ttft_p50_ms": {"single": single_probe, "ray": single_probe + overhead}}

            progress("killed_replica: the same trace, one replica killed halfway")
            resent_before = _resent(url)
            killed: dict = {}

            def kill() -> None:
                """Halfway through, the replica with the most requests queued and running."""
                time.sleep(result.wall_s / 2)
                answers = ray.get(mailbox(APP).ask_all.remote("status"))
                reports = [rep for kind, rep in answers.values() if kind == "ok"]
                busy = {rep.actor: sum(row["queued"] + row["running"] for row in rep.experts) for rep in reports}
                victim = max(busy, key=busy.get)
                ray.kill(ray.get_actor(victim, namespace="serve"))
                killed.update(at_s=time.monotonic(), after_s=time.monotonic() - started, in_flight=busy[victim])
            killer = threading.Thread(target=kill, daemon=True)
            started = time.monotonic()
            killer.start()
            hit = load(url, trace, concurrency, seed=4)
            killer.join()
            deadline, healed_s = time.monotonic() + 180, None
            while time.monotonic() < deadline:
                states = serve.status().applications[APP].deployments["Experts"].replica_states
                if states.get("RUNNING", 0) == replicas:
                    healed_s = time.monotonic() - killed["at_s"]
                    break
                time.sleep(0.5)
            report["killed_replica"] = {"completed": hit.completed, "resent": _resent(url) - resent_before,
                                        "failed": hit.failed, "in_flight_at_kill": killed["in_flight"],
                                        "killed_after_s": killed["after_s"], "wall_s": hit.wall_s,
                                        "requests_per_s": hit.requests_per_s, "ttft_p99_s": hit.ttft_p99_s,
                                        "replaced_after_s": healed_s}
            shutdown()
        return report
    finally:
        pool.shutdown()
        if tmp:
            tmp.cleanup()


def format_table(r: dict) -> str:
    lines = [f"machine: {r['machine']}",
             f"{r['requests']} requests, {r['concurrency']} concurrent, Zipf s={r['zipf_s']} over {r['experts']} "
             f"experts of {r['expert_mb']:.0f} MB, {r['max_tokens']} tokens each, engine {r['engine']}",
             f"ray: {r['nodes']} nodes on this machine, {r['replicas']} expert replicas of {r['replica_threads']} "
             f"thread(s), each holding {r['host_slots']} experts in host memory and {r['device_slots']} on the device; "
             f"single: one process of {r['single_threads']} threads holding as many as all replicas together",
             f"{'':8} {'req/s':>7} {'TTFT p50':>9} {'TTFT p99':>9} {'done':>5} {'failed':>6}  served from"]
    for label in ("single", "ray"):
        x = r[label]
        lines.append(f"{label:8} {x['requests_per_s']:7.2f} {x['ttft_p50_s']:8.3f}s {x['ttft_p99_s']:8.3f}s "
                     f"{x['completed']:5d} {x['failed']:6d}  {x['served_from']}")
    x, k = r["ray"], r["killed_replica"]
    lines.append(f"ray: affinity {x['affinity_hit_rate']:.1%}, added latency p50 {x['overhead_p50_ms']:.1f} ms")
    healed = f"replaced after {k['replaced_after_s']:.1f} s" if k["replaced_after_s"] is not None else "NOT replaced"
    lines.append(f"one replica killed {k['killed_after_s']:.0f} s into a {k['wall_s']:.0f} s run, "
                 f"{k['in_flight_at_kill']} requests queued or running on it: {k['completed']} completed, "
                 f"{k['resent']:.0f} resent, {k['failed']} failed; {healed}")
    return "\n".join(lines)


__all__ = ["run", "format_table"]
