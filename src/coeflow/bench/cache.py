"""`coeflow bench cache`: eviction policies simulated on request traces, against Belady.

The device tier holds `capacity` experts out of `experts` (all the same size, so a tier of
k slots and Belady's optimum are well defined). Traces: Zipf popularity at several skews
(a stationary mix, as when many users share a CoE) and a shifting working set (a handful
of experts busy for a while, then another handful: a workload changing over the day). The
simulation uses the store's own tier bookkeeping and policy objects
(`coeflow.store.tiers.simulate_cache`), so what is measured here is what the store does; it
is a pure simulation and takes a few seconds."""

from __future__ import annotations

import random
from collections import Counter
from typing import Callable

from coeflow.hw.shapes import load_shape
from coeflow.sim.workload import quantized_shape
from coeflow.store.policies import FIFO, LFU, LRFU, LRU, Belady
from coeflow.store.tiers import simulate_cache

EXPERT_BYTES = 300_000_000  # each expert ~300 MB in bf16, as in `coeflow bench switch`
WEIGHTS = ("bf16", "int8", "int4")


def expert_bytes(weights: str) -> int:
    """An expert's bytes stored as `weights`: EXPERT_BYTES in bf16, smaller in the proportion
    of a quantized Llama-2-7B to its bf16 self (the hardware model's count: products packed
    with their scales, embeddings and norms in bf16)."""
    if weights == "bf16":
        return EXPERT_BYTES
    shape = load_shape("llama2-7b")
    return round(EXPERT_BYTES * quantized_shape(shape, int(weights[3:])).weight_bytes() / shape.weight_bytes())
LRFU_HALF_LIFE = 50  # requests


def zipf_trace(n_experts: int, length: int, s: float, rng: random.Random) -> list[str]:
    """Requests drawn i.i.d. with P(rank r) proportional to 1 / r**s; ranks are shuffled over
    expert names so popularity is not tied to the name order."""
    names = [f"e{i:02d}" for i in range(n_experts)]
    rng.shuffle(names)
    weights = [1.0 / (r + 1) ** s for r in range(n_experts)]
    return rng.choices(names, weights=weights, k=length)


def shifting_trace(n_experts: int, length: int, working_set: int, phase: int, hot: float,
                   rng: random.Random) -> list[str]:
    """A working set of `working_set` experts receives `hot` of the requests (uniformly) for
    `phase` requests, then moves to other experts; the rest is uniform noise over all."""
    names = [f"e{i:02d}" for i in range(n_experts)]
    trace: list[str] = []
    while len(trace) < length:
        ws = rng.sample(names, working_set)
        for _ in range(min(phase, length - len(trace))):
            trace.append(rng.choice(ws) if rng.random() < hot else rng.choice(names))
    return trace


def traces(n_experts: int, length: int, seed: int) -> dict[str, list[str]]:
    rng = random.Random(seed)
    out = {f"zipf s={s}": zipf_trace(n_experts, length, s, rng) for s in (0.6, 0.8, 1.0, 1.2, 1.5)}
    out["shifting ws=4"] = shifting_trace(n_experts, length, 4, 500, 0.9, rng)
    out["shifting ws=6"] = shifting_trace(n_experts, length, 6, 500, 0.9, rng)
    return out


def run(experts: int = 32, capacity: int = 4, length: int = 20_000, seed: int = 0,
        progress: Callable[[str], None] = lambda s: None, weights: tuple[str, ...] = ("bf16",)) -> dict:
    """`capacity` bf16 experts' bytes make the device tier; with `weights` int8 or int4 the same
    bytes hold more of the smaller experts (each row says how many: `slots`)."""
    cap_bytes = capacity * EXPERT_BYTES
    rows = []
    for w in weights:
        rows += _replay(experts, cap_bytes, w, length, seed, progress)
    return {"experts": experts, "capacity": capacity, "requests": length, "seed": seed,
            "expert_bytes": EXPERT_BYTES, "weights_bytes": {w: expert_bytes(w) for w in weights},
            "lrfu_half_life": LRFU_HALF_LIFE, "results": rows}


def _replay(experts: int, cap_bytes: int, weights: str, length: int, seed: int,
            progress: Callable[[str], None]) -> list[dict]:
    size = expert_bytes(weights)
    sizes = {f"e{i:02d}": size for i in range(experts)}
    capacity = cap_bytes // size
    rows = []
    for name, trace in traces(experts, length, seed).items():
        progress(f"replaying {name} ({weights})")
        opt = simulate_cache(trace, sizes, cap_bytes, Belady(trace))
        online = (LRU(), LFU(), FIFO(), LRFU(LRFU_HALF_LIFE))
        for r in [simulate_cache(trace, sizes, cap_bytes, p) for p in online] + [opt]:
            rows.append({"trace": name, "weights": weights, "slots": capacity, "policy": r.policy, "hit_rate": r.hit_rate,
                         "bytes_moved": r.bytes_moved, "gb_moved": r.bytes_moved / 1e9,
                         "points_below_belady": 100 * (opt.hit_rate - r.hit_rate)})
        # A reference for i.i.d. traffic: the hit rate of keeping the k most requested experts
        # (known in hindsight) resident all along, each missing once. For an online policy that
        # does not know the future, this is about the best reachable on a stationary trace.
        top = (sum(n for _, n in Counter(trace).most_common(capacity)) - capacity) / len(trace)
        rows.append({"trace": name, "weights": weights, "slots": capacity, "policy": "top-k (oracle)",
                     "hit_rate": top, "bytes_moved": None, "gb_moved": None,
                     "points_below_belady": 100 * (opt.hit_rate - top)})
    return rows


def format_table(report: dict) -> str:
    sizes = ", ".join(f"{w} {b / 1e6:.0f} MB" for w, b in report["weights_bytes"].items())
    lines = [f"{report['experts']} experts ({sizes}), device tier of {report['capacity']} bf16 experts' bytes; "
             f"{report['requests']} requests per trace (seed {report['seed']})",
             f"lrfu half-life {report['lrfu_half_life']} requests; top-k (oracle): the k most requested "
             "experts kept for the whole trace",
             f"{'trace':16} {'weights':7} {'slots':>5} {'policy':14} {'hit rate':>8} {'GB moved':>9} "
             f"{'pts below Belady':>17}"]
    for r in report["results"]:
        moved = f"{r['gb_moved']:9.1f}" if r["gb_moved"] is not None else f"{'-':>9}"
        lines.append(f"{r['trace']:16} {r['weights']:7} {r['slots']:5d} {r['policy']:14} {100 * r['hit_rate']:7.1f}% "
                     f"{moved} {r['points_below_belady']:17.1f}")
    return "\n".join(lines)
