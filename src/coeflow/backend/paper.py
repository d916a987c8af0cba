"""The paper's CoE workload (Table V) as traces, replayed through the CoE core with the
paper's procedure: one model, two entry points. `coeflow simulate paper` computes Table V
in closed form (coeflow.sim.coe.Deployment.latency); here the same figures come from the
discrete-event replay, and a test holds the two equal.

A Table V batch is `batch` requests arriving together, each for a different expert that is
not in HBM (the 150-expert setting: every pair copies its expert), 128 prompt tokens, 20 or
200 output tokens. Its latency is the time until the batch's last answer."""

from __future__ import annotations

from coeflow.backend.modelled import Machine, ModelledBackend
from coeflow.backend.replay import ReplayResult, replay
from coeflow.backend.workload import coe_of_copies, options_for, resolve
from coeflow.hw.shapes import load_shape
from coeflow.hw.spec import load_hardware
from coeflow.sim.coe import CoEWorkload
from coeflow.sim.paper import DGX, N_EXPERTS_TABLE_V, SN40L_NODE, SWITCHING, TABLE_V, Row, _row
from coeflow.trace.format import TraceRequest


def table_v_trace(batch: int, gen: int, prompt: int = CoEWorkload.prompt) -> list[TraceRequest]:
    return [TraceRequest(0.0, f"e{i}", gen, prompt_tokens=prompt, id=f"pair{i}") for i in range(batch)]


def replay_table_v(hw: str, batch: int, gen: int, prompt: int = CoEWorkload.prompt) -> ReplayResult:
    coe = coe_of_copies(N_EXPERTS_TABLE_V, "llama2-7b")
    backend = ModelledBackend(Machine(load_hardware(hw)), coe.shapes, router=load_shape("llama2-7b"))
    return replay(backend, resolve(table_v_trace(batch, gen, prompt), coe),
                  options_for("paper", router_batch=batch, start_tier="host"))


def table_v_rows_via_trace(prompt: int = CoEWorkload.prompt) -> list[Row]:
    """Table V's speedup and switching rows, named as coeflow.sim.paper.table_v_rows names them."""
    rows = []
    for (kind, batch, gen), refs in TABLE_V.items():
        ours = replay_table_v(SN40L_NODE, batch, gen, prompt)
        for (label, hw), ref in zip(DGX.items(), refs):
            theirs = replay_table_v(hw, batch, gen, prompt)
            if kind == "expert only":
                pred = (theirs.compute_busy_s - theirs.router_busy_s) / (ours.compute_busy_s - ours.router_busy_s)
            else:
                pred = theirs.makespan_s / ours.makespan_s
            rows.append(_row("Table V", f"{kind}, batch {batch}, {gen} tokens: SN40L vs {label}", pred, ref, 20.0))
    sn = replay_table_v(SN40L_NODE, 1, 20, prompt).records[0].switch_s
    for (label, hw), ref in zip(DGX.items(), SWITCHING):
        theirs = replay_table_v(hw, 1, 20, prompt).records[0].switch_s
        rows.append(_row("Table V", f"model switching time: SN40L vs {label}", theirs / sn, ref, 15.0))
    return rows
