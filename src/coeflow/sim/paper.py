"""The paper's results next to the model's, with the error of each (`coeflow simulate paper`),
and Table V again through the discrete-event replay (`table_v_rows_via_trace`).

References are the paper's numbers (shared/paper/sn40l.md) and published GPU measurements
(coeflow.sim.anchors); they are never inputs, except the rows marked `calibration`, on which
the free overheads were fitted (coeflow.sim.calibration). Targets: Table V speedups within
20%, switching ratios within 15%, DGX footprint for 850 experts 19 +- 1 nodes, GPU decode
within 15%, Table IV within 25%."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from coeflow.hw.generation import forward_pass
from coeflow.hw.shapes import load_shape
from coeflow.hw.spec import load_hardware, load_stack
from coeflow.sim.anchors import GPU_ANCHORS
from coeflow.sim.coe import CoEWorkload, Deployment
from coeflow.sim.modelled import Machine, ModelledBackend
from coeflow.sim.replay import ReplayResult, replay
from coeflow.sim.speculative import Speculation, decode_tokens_per_s, speculative_cost
from coeflow.sim.workload import coe_of_copies, options_for, resolve
from coeflow.trace.format import TraceRequest

SN40L_NODE, SN40L_16 = "sn40l-8", "sn40l-16"
DGX = {"DGX A100": "dgx-a100", "DGX H100": "dgx-h100"}
N_EXPERTS_TABLE_V = 150  # Samba-CoE
FOOTPRINT_EXPERTS = 850

# Table V: (row, batch, gen, expert_only) -> (vs DGX A100, vs DGX H100)
TABLE_V = {
    ("overall", 8, 20): (6.6, 3.7), ("overall", 1, 20): (4.8, 2.8), ("expert only", 1, 20): (2.0, 1.5),
    ("overall", 8, 200): (4.2, 2.7), ("overall", 1, 200): (3.9, 2.6), ("expert only", 1, 200): (3.2, 2.3),
}
SWITCHING = (31.0, 15.0)
TABLE_IV = {"llama3-8b": (1042.0, None), "llama3-70b": (457.0, Speculation()),
            "llama3-405b": (129.0, Speculation())}
# Table IV's numbers are Artificial Analysis (AA) measurements: SambaNova's blog by two
# of the paper's authors gives the same 1042/457/129 "from benchmarking results
# published by artificialanalysis.ai". AA's default workload is ~1,000 input and ~1,000 output
# tokens (artificialanalysis.ai/methodology/performance-benchmarking), so decode runs at a mean
# KV length of 1,500 tokens; the paper's "8K" is the sequence length the deployment supports.
# A full 8K cache on every step (a statically sized attention) is the pessimistic end, and AA's
# 100-token workload the other: both are in the sensitivity table.
TABLE_IV_PROMPT, TABLE_IV_OUTPUT = 1000, 1000
TABLE_IV_CONTEXT = TABLE_IV_PROMPT + TABLE_IV_OUTPUT // 2
# Fusion benchmarks (paper's list; llava1.5's language model is Llama-2-7B-shaped and
# FlashFFTConv/sparseGPT-training are not decoder inference, so they are left out)
FUSION_BENCHMARKS = (("llama2-7b", 4096), ("llama2-70b", 4096), ("bloom-176b", 8192),
                     ("mistral-7b", 2048), ("mistral-7b", 4096), ("falcon-40b", 2048))
FUSION_DECODE_BATCH = 1  # open in the paper; chosen: a single user


@dataclass
class Row:
    group: str
    name: str
    predicted: float
    reference: float
    error_pct: float
    tolerance_pct: float | None  # None: reported, no target
    met: bool | None
    calibration: bool = False
    note: str = ""
    target: str = ""  # how `met` was judged, e.g. "±20%", "±1", "paper range 1.5-3"


def _row(group, name, predicted, reference, tol=None, calibration=False, note="", abs_tol=None):
    err = 100.0 * (predicted / reference - 1.0)
    if abs_tol is not None:
        met, target = abs(predicted - reference) <= abs_tol, f"±{abs_tol:g}"
    else:
        met = None if tol is None else abs(err) <= tol
        target = "" if tol is None else f"±{tol:g}%"
    return Row(group, name, predicted, reference, err, tol, met, calibration, note, target)


def _range_row(group, name, predicted, lo, hi, note=""):
    """A paper range: error is the distance outside it (0 inside)."""
    ref = lo if predicted < lo else hi if predicted > hi else predicted
    return Row(group, name, predicted, ref, 100.0 * (predicted / ref - 1.0), None,
               lo <= predicted <= hi, False, note, f"paper range {lo:g}-{hi:g}")


def table_v_rows(workload_prompt: int = CoEWorkload.prompt, sn: Deployment | None = None,
                 dgx: dict[str, Deployment] | None = None) -> list[Row]:
    """Table V. `sn` and `dgx` replace the shipped deployments (sensitivity analysis)."""
    sn = sn or Deployment.of(SN40L_NODE)
    dgx = dgx or {label: Deployment.of(hw) for label, hw in DGX.items()}
    rows = []
    for (kind, batch, gen), refs in TABLE_V.items():
        w = CoEWorkload(prompt=workload_prompt, gen=gen, batch=batch)
        ours = sn.latency(w)
        for (label, d), ref in zip(dgx.items(), refs):
            theirs = d.latency(w)
            pred = (theirs.expert_s / ours.expert_s if kind == "expert only"
                    else theirs.total_s / ours.total_s)
            cal = kind == "expert only" and batch == 1 and gen == 20 and label == "DGX A100"
            rows.append(_row("Table V", f"{kind}, batch {batch}, {gen} tokens: SN40L vs {label}",
                             pred, ref, 20.0, calibration=cal))
    for (label, d), ref in zip(dgx.items(), SWITCHING):
        pred = d.switch_s() / sn.switch_s()
        rows.append(_row("Table V", f"model switching time: SN40L vs {label}", pred, ref, 15.0,
                         note="ratio of copy bandwidths, both stated in the paper's text"))
    for label, d in dgx.items():
        cap = d.store_capacity()
        rows.append(_row("Table V", f"{label} out of memory above N experts", cap, 150.0,
                         note="host DRAM holds every expert"))
    return rows


def footprint_rows() -> list[Row]:
    sn = Deployment.of(SN40L_NODE)
    rows = [_row("Footprint", f"SN40L nodes for {FOOTPRINT_EXPERTS} experts",
                 sn.nodes_for(FOOTPRINT_EXPERTS), 1.0, abs_tol=0),
            _row("Footprint", "experts one SN40L node holds in DDR", sn.store_capacity(), 850.0,
                 note="paper: 'up to 850'; we count all 8 x 1.5 TiB")]
    for label, hw in DGX.items():
        d = Deployment.of(hw)
        rows.append(_row("Footprint", f"{label} nodes for {FOOTPRINT_EXPERTS} experts at TP8 latency",
                         d.nodes_for(FOOTPRINT_EXPERTS), 19.0, abs_tol=1))
        rows.append(_row("Footprint", f"{label} experts resident in HBM (the knee)",
                         d.hbm_expert_slots(), 50.0, note="paper: 'up to about 50'"))
    return rows


def gpu_rows() -> list[Row]:
    rows = []
    for a in GPU_ANCHORS:
        decode = a.metric != "prefill_s"
        rows.append(_row("GPU anchors", a.name, a.predict(), a.reference,
                         15.0 if decode else None, calibration=a.calibration,
                         note=a.source if decode else a.source + "; prefill, no target"))
    return rows


def table_iv_rows(hw=None, spec_override: Speculation | None = None,
                  context: int = TABLE_IV_CONTEXT) -> list[Row]:
    """Decode tokens/s per user on 16 sockets at a mean KV length of `context` tokens."""
    hw = hw or load_hardware(SN40L_16)
    rows = []
    for model, (ref, spec) in TABLE_IV.items():
        spec = spec_override if (spec and spec_override) else spec
        if spec is None:
            pred, note = decode_tokens_per_s(hw, model, context), "no speculation"
        else:
            sc = speculative_cost(hw, model, context, spec)
            pred = sc.tokens_per_s
            note = (f"speculative: draft {spec.draft} on the same sockets, acceptance "
                    f"{spec.acceptance}, k={sc.k} ({'given' if spec.k else 'fastest'}); "
                    f"without: {decode_tokens_per_s(hw, model, context):.0f} tok/s")
        rows.append(_row("Table IV", f"{model} on 16 sockets, tokens/s per user", pred, ref, 25.0,
                         note=note))
    return rows


def fusion_ratios(hw_name: str = SN40L_NODE, decode_batch: int = FUSION_DECODE_BATCH,
                  hw=None) -> list[dict]:
    """Per benchmark: unfused/fused and SO/HO time ratios for prefill and one decode step."""
    hw = hw or load_hardware(hw_name)
    stacks = {n: load_stack(n, "rdu") for n in ("rdu-unfused", "rdu-fused-so", "rdu-fused-ho")}
    out = []
    for model, seq in FUSION_BENCHMARKS:
        shape = load_shape(model)
        pf = {n: forward_pass(hw, s, shape, "prefill", 1, seq, 0, hw.count) for n, s in stacks.items()}
        dc = {n: forward_pass(hw, s, shape, "decode", decode_batch, 1, seq, hw.count)
              for n, s in stacks.items()}
        out.append({
            "benchmark": f"{model} {seq // 1024}K",
            "prefill_fused_speedup": pf["rdu-unfused"].time_s / pf["rdu-fused-so"].time_s,
            "prefill_ho_speedup": pf["rdu-fused-so"].time_s / pf["rdu-fused-ho"].time_s,
            "prefill_launch_reduction": pf["rdu-unfused"].launches / pf["rdu-fused-so"].launches,
            "decode_fused_speedup": dc["rdu-unfused"].time_s / dc["rdu-fused-so"].time_s,
            "decode_ho_speedup": dc["rdu-fused-so"].time_s / dc["rdu-fused-ho"].time_s,
        })
    return out


def fusion_rows() -> list[Row]:
    r = fusion_ratios()
    col = lambda k: [x[k] for x in r]  # noqa: E731
    best = max(r, key=lambda x: x["decode_fused_speedup"])["benchmark"]
    return [
        _range_row("Fusion", "prefill fused/unfused, lowest", min(col("prefill_fused_speedup")), 1.5, 3.0),
        _range_row("Fusion", "prefill fused/unfused, highest", max(col("prefill_fused_speedup")), 1.5, 3.0),
        _range_row("Fusion", "decode fused/unfused, lowest", min(col("decode_fused_speedup")), 1.0, 13.0),
        _row("Fusion", "decode fused/unfused, highest (paper: Mistral)",
             max(col("decode_fused_speedup")), 13.0, note=f"ours highest: {best}"),
        _range_row("Fusion", "decode HO/SO, lowest", min(col("decode_ho_speedup")), 1.4, 8.0),
        _range_row("Fusion", "decode HO/SO, highest", max(col("decode_ho_speedup")), 1.4, 8.0),
        _range_row("Fusion", "prefill HO/SO, highest", max(col("prefill_ho_speedup")), 1.0, 1.1),
        _row("Fusion", "llama2-7b 4K prefill: fewer launches when fused",
             r[0]["prefill_launch_reduction"], 11.0),
    ]


def report() -> list[Row]:
    return table_v_rows() + footprint_rows() + gpu_rows() + table_iv_rows() + fusion_rows()


def summary(rows: list[Row]) -> dict:
    """Per group: targets met among held-out rows, and the largest held-out error."""
    out = {}
    for group in dict.fromkeys(r.group for r in rows):
        g = [r for r in rows if r.group == group and r.met is not None]
        held = [r for r in g if not r.calibration]
        out[group] = {
            "met": sum(bool(r.met) for r in g), "rows_with_target": len(g),
            "held_out_max_abs_error_pct": max((abs(r.error_pct) for r in held), default=None),
            "calibration_rows": sum(r.calibration for r in g),
        }
    return out


def as_json(rows: list[Row]) -> dict:
    return {"rows": [asdict(r) for r in rows], "summary": summary(rows),
            "workload": {"coe_prompt_tokens": CoEWorkload.prompt, "experts": N_EXPERTS_TABLE_V,
                         "switch": "every (prompt, expert) pair switches (cold), on every platform"}}


# ---------------------------------------------------------------- Table V through the trace path
# The same workload as traces, replayed through the CoE core with the paper's procedure: one
# model, two entry points, and a test holds the two equal. A Table V batch is `batch` requests
# arriving together, each for a different expert that is not in HBM (the 150-expert setting:
# every pair copies its expert), 128 prompt tokens, 20 or 200 output tokens. Its latency is
# the time until the batch's last answer.

def table_v_trace(batch: int, gen: int, prompt: int = CoEWorkload.prompt) -> list[TraceRequest]:
    return [TraceRequest(0.0, f"e{i}", gen, prompt_tokens=prompt, id=f"pair{i}") for i in range(batch)]


def replay_table_v(hw: str, batch: int, gen: int, prompt: int = CoEWorkload.prompt) -> ReplayResult:
    coe = coe_of_copies(N_EXPERTS_TABLE_V, "llama2-7b")
    backend = ModelledBackend(Machine(load_hardware(hw)), coe.shapes, router=load_shape("llama2-7b"))
    return replay(backend, resolve(table_v_trace(batch, gen, prompt), coe),
                  options_for("paper", router_batch=batch, start_tier="host"))


def table_v_rows_via_trace(prompt: int = CoEWorkload.prompt) -> list[Row]:
    """Table V's speedup and switching rows from the replay, named as `table_v_rows` names them."""
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
