"""`coeflow bench validate`: the modelled backend against this machine. One trace is run for
real through the server on a CoE, and replayed on the probed `local-cpu` spec; predicted vs
measured.

The hardware and engine numbers come from `coeflow hw probe` (probe models of another
shape, raw file reads). What the probe does not see is the serving path: HTTP and SSE per
request and per token, the client in the same process, GIL hand-offs between the worker,
the loader threads and the event loop. Those three costs (per request, per token, per load)
are fitted on a *calibration* trace (seed 0) and the model is then judged on a *validation*
trace (another seed, its own real run), never on the run it was fitted on. The model sees
only the workload (arrivals, experts, the prompt and output token counts the run produced)."""

from __future__ import annotations

import json
import statistics
from typing import Callable

from coeflow.trace import TraceRequest, TraceSpec, generate
from coeflow.trace.client import pct, play


def measure(coe_path: str, trace: list[TraceRequest], engine: str, device_experts: int,
            host_experts: int) -> tuple[list[dict], dict[str, int]]:
    """Serve the CoE for real with budgets of whole experts; play the trace; per-request rows."""
    import torch

    from coeflow.backend.real.layout import plan_layout
    from coeflow.coefile import load_coe
    from coeflow.server import ServerOptions, build_server, serving
    coe = load_coe(coe_path)
    # the largest expert in the server's dtype, plus room for its page padding
    block = max(plan_layout(e.path, torch.float32).nbytes for e in coe.experts) + (1 << 20)
    opts = ServerOptions(device_mem=device_experts * block, host_mem=host_experts * block, device="cpu",
                         fused=engine == "fused")
    srv = build_server(coe_path, opts)
    compile_first, srv.warm_up = srv.warm_up, []
    with serving(srv) as url:
        srv.scheduler.warm_up(compile_first)  # every batch size's fused step; not part of the trace
        play(url, [TraceRequest(0.0, n, 2, prompt_tokens=4) for n in coe.expert_names[:1]])  # the HTTP path
        srv.store.unload(coe.expert_names[0], "disk")
        rows = play(url, trace)
    return rows, {"device": device_experts, "host": host_experts}


def predict(coe_path: str, rows: list[dict], engine: str, budgets: dict[str, int], hw: str = "local-cpu",
            serving: dict | None = None):
    """Replay the run's realized workload on the modelled machine. `serving` adds fitted
    serving-path costs: per_request_s, per_token_s, per_load_s."""
    from dataclasses import replace
    from coeflow.sim.modelled import ModelledBackend
    from coeflow.sim.replay import ReplayOptions, replay
    from coeflow.sim.workload import coe_from_file, resolve, resolve_machine
    coe = coe_from_file(coe_path, use_router=False)
    machine = resolve_machine(hw, stack=f"local-{engine}")
    if serving:
        st = machine.stack
        machine = replace(machine, stack=replace(st, invocation_overhead_s=st.invocation_overhead_s
                                                 + serving["per_request_s"],
                                                 step_overhead_s=st.step_overhead_s + serving["per_token_s"]),
                          disk_read_latency_s=machine.disk_read_latency_s + serving["per_load_s"])
    backend = ModelledBackend(machine, coe.shapes)
    per = max(backend.expert_bytes(n) for n in coe.shapes)
    realized = [TraceRequest(r["arrival_s"], r["expert"], r["max_tokens"], prompt_tokens=r["prompt_tokens"],
                             output_tokens=max(1, r["output_tokens"])) for r in rows]
    opts = ReplayOptions(device_mem=budgets["device"] * per, host_mem=budgets["host"] * per, start_tier="disk")
    return replay(backend, resolve(realized, coe), opts)


def fit_serving(rows: list[dict], res) -> dict:
    """The serving path's costs beyond the engine model, from one run: medians of measured
    less predicted, for requests that ran alone on a resident expert (TTFT, per token) and
    for loads from disk (switch)."""
    ok = [r for r in rows if "error" not in r]
    pairs = list(zip(ok, res.records))
    alone = [(m, p) for m, p in pairs if m.get("source_tier") == "device" and p.batch == 1 and m.get("ttft_s")
             and m.get("queued_s", 1) < 0.002]
    per_req = statistics.median(m["ttft_s"] - p.ttft_s for m, p in alone) if alone else 0.0
    tok = [((m["latency_s"] - m["ttft_s"]) / (m["output_tokens"] - 1)) - (p.latency_s - p.ttft_s) / (p.gen_tokens - 1)
           for m, p in alone if m["output_tokens"] > 1 and p.gen_tokens > 1]
    loads = [m["switch_s"] - p.switch_s for m, p in pairs if m.get("source_tier") == "disk" == p.source_tier]
    return {"per_request_s": max(0.0, per_req), "per_token_s": max(0.0, statistics.median(tok)) if tok else 0.0,
            "per_load_s": max(0.0, statistics.median(loads)) if loads else 0.0,
            "fitted_on": {"requests_alone": len(alone), "loads": len(loads)}}


def compare(rows: list[dict], res) -> dict:
    ok = [r for r in rows if "error" not in r]
    recs = res.records
    out = {}
    for key, m, p in (("latency_p50_s", [r["latency_s"] for r in ok], [r.latency_s for r in recs]),
                      ("ttft_p50_s", [r["ttft_s"] for r in ok if r.get("ttft_s")], [r.ttft_s for r in recs])):
        out[key] = {"measured": pct(m, 0.5), "predicted": pct(p, 0.5)}
    for tier in ("disk", "host"):
        m = [r["switch_s"] for r in ok if r.get("source_tier") == tier and r["switch_s"] > 0]
        p = [r.switch_s for r in recs if r.source_tier == tier and r.switch_s > 0]
        out[f"switch_from_{tier}_mean_s"] = {"measured": statistics.fmean(m) if m else None,
                                             "predicted": statistics.fmean(p) if p else None,
                                             "n_measured": len(m), "n_predicted": len(p)}
    for v in out.values():
        if v["measured"] and v["predicted"] is not None:
            v["error_pct"] = 100 * (v["predicted"] / v["measured"] - 1)
    return out


def run(coe: str, engine: str = "eager", requests: int = 60, rate: float = 2.0, max_tokens: int = 16,
        device_experts: int = 2, host_experts: int = 3, hw: str = "local-cpu", seed: int = 0,
        rows_path: str | None = None, progress: Callable[[str], None] = lambda s: None) -> dict:
    """Calibrate on the trace of `seed`, validate on that of `seed + 1`; the report."""
    from coeflow.coefile import load_coe
    from coeflow.hw.probed import load_probed
    if hw == "local-cpu":
        load_probed(hw)  # the one-line error that says to run `coeflow hw probe`, before minutes of serving
    names = tuple(load_coe(coe).expert_names)

    def served(seed: int) -> tuple[list[dict], dict]:
        trace = generate(TraceSpec(names, rate, requests, zipf_s=1.0, prompt_tokens=(8, 48),
                                   max_tokens=(max_tokens, max_tokens), seed=seed))
        progress(f"serving trace seed {seed} ({requests} requests) for real")
        rows, budgets = measure(coe, trace, engine, device_experts, host_experts)
        failed = [r for r in rows if "error" in r]
        if failed:
            progress(f"{len(failed)} requests failed, e.g. {failed[0]['error']}")
        return [r for r in rows if "error" not in r], budgets

    cal_rows, budgets = served(seed)
    serving = fit_serving(cal_rows, predict(coe, cal_rows, engine, budgets, hw))
    val_rows, budgets = served(seed + 1)
    if rows_path:
        with open(rows_path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in val_rows)
    return {"engine": engine, "requests": len(val_rows), "budgets_experts": budgets,
            "serving_fit_on_calibration_trace": serving,
            "probe_only": compare(val_rows, predict(coe, val_rows, engine, budgets, hw)),
            "probe_plus_serving_fit": compare(val_rows, predict(coe, val_rows, engine, budgets, hw, serving))}


def format_report(report: dict) -> str:
    lines = []
    for k, v in report.items():
        if isinstance(v, dict) and k.startswith("probe"):
            lines.append(k)
            lines += [f"  {kk:26s} {vv}" for kk, vv in v.items()]
        else:
            lines.append(f"{k:26s} {v}")
    return "\n".join(lines)
