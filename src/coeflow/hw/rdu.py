"""RDU (SN40L) mapping: the operator graph becomes streaming-dataflow kernels.

Fused (the paper's section on streaming dataflow): consecutive operators are packed into one
kernel while their on-chip buffers fit in the PMUs (a whole decoder layer when it fits). In a
kernel every operator is a pipeline stage on its own PCUs, allocated in proportion to its
FLOPs; tokens stream through in tiles, so the compute time is (tiles + stages - 1) times the
slowest stage's time per tile (the bottleneck plus pipeline fill). Only the kernel's inputs,
outputs, weights and KV cache touch HBM (or DDR for spilled weights); intermediates stay in
PMUs. Collectives are stages on the peer-to-peer links; their latency cannot be hidden.

Unfused: each framework operator is one kernel (attention: scores, softmax, PV), each owning the
whole chip, intermediates through HBM, each launch loading its program and paying a host
round trip (software orchestration).

Launch: software-orchestrated (SO) kernels pay a host round trip each; hardware-orchestrated
(HO) kernels are sequenced by the AGCUs for a small per-kernel cost."""

from __future__ import annotations

import math
from dataclasses import dataclass

from coeflow.hw.costs import PassCost, all_gather_s, ring_all_reduce_s
from coeflow.hw.graph import Graph, Op
from coeflow.hw.spec import Hardware, Stack

TILE_TOKENS = 32  # tokens per streamed tile; chosen (paper gives none), see docs sensitivity
WEIGHT_PANEL_BYTES = 4 * 2**20  # double-buffered weight panel per GEMM stage (chosen)
KV_PANEL_BYTES = 4 * 2**20  # double-buffered K/V block per attention stage (chosen)


@dataclass(frozen=True)
class FusedKernel:
    ops: tuple[Op, ...]
    sram_bytes: float


def stage_sram_bytes(op: Op, tokens: int) -> float:
    """On-chip buffer a stage needs: double-buffered input and output tiles, plus a weight
    panel (weights stream from HBM) or a K/V block."""
    per_token = (op.in_bytes + op.out_bytes) / max(tokens, 1)
    tile = 2 * min(tokens, TILE_TOKENS) * per_token
    return tile + min(op.weight_bytes, WEIGHT_PANEL_BYTES) + min(op.kv_read_bytes, KV_PANEL_BYTES)


def partition(ops: tuple[Op, ...], tokens: int, sram_budget: float) -> list[FusedKernel]:
    """Greedy: extend the current kernel with the next operator while its buffers fit."""
    kernels: list[FusedKernel] = []
    current: list[Op] = []
    used = 0.0
    for op in ops:
        need = stage_sram_bytes(op, tokens)
        if current and used + need > sram_budget:
            kernels.append(FusedKernel(tuple(current), used))
            current, used = [], 0.0
        current.append(op)
        used += need
    if current:
        kernels.append(FusedKernel(tuple(current), used))
    return kernels


def _pipeline_compute_s(ops: tuple[Op, ...], tokens: int, hw: Hardware) -> float:
    """Streaming pipeline time: PCUs split among stages by FLOPs (at least one each); the
    slowest stage sets the rate, and the first tile must cross every stage (fill)."""
    dev = hw.device
    units = int(dev.units * dev.fused_utilisation)
    unit_rate = dev.peak_flops / dev.units * dev.gemm_efficiency
    work = [op.flops for op in ops if op.flops > 0]
    if not work:
        return 0.0
    total = sum(work)
    spare = units - len(work)
    alloc = [1 + math.floor(spare * w / total) for w in work] if spare > 0 else [1] * len(work)
    tiles = max(1, math.ceil(tokens / TILE_TOKENS))
    slowest_per_tile = max(w / tiles / (a * unit_rate) for w, a in zip(work, alloc))
    return (tiles + len(work) - 1) * slowest_per_tile


def _weight_tier_times(weight_bytes: float, ddr_fraction: float, hw: Hardware) -> tuple[float, float]:
    dev = hw.device
    hbm = weight_bytes * (1 - ddr_fraction)
    ddr = weight_bytes * ddr_fraction
    ddr_s = ddr / dev.ddr.effective_bandwidth if ddr and dev.ddr else 0.0
    return hbm, ddr_s


def _launch_s(hw: Hardware, stack: Stack) -> float:
    dev = hw.device
    return dev.ho_launch_s if stack.hardware_orchestrated else dev.so_launch_s


def _collective_s(op: Op, tp: int, hw: Hardware) -> float:
    if "reduce" in op.name:
        return ring_all_reduce_s(op.comm_bytes, tp, hw.interconnect_bandwidth)
    return all_gather_s(op.comm_bytes, tp, hw.interconnect_bandwidth)


def rdu_pass(hw: Hardware, stack: Stack, graph: Graph, ddr_fraction: float = 0.0) -> PassCost:
    """`ddr_fraction`: share of the weights that placement left in DDR (streamed from there)."""
    if stack.fuse_layer:
        return _fused_pass(hw, stack, graph, ddr_fraction)
    return _unfused_pass(hw, stack, graph, ddr_fraction)


def _fused_pass(hw: Hardware, stack: Stack, graph: Graph, ddr_fraction: float) -> PassCost:
    dev = hw.device
    tokens = graph.batch * graph.new_tokens
    budget = dev.onchip_bytes * dev.fused_utilisation
    hbm_rate = dev.hbm.effective_bandwidth
    cost = PassCost()
    distinct = 0
    for ops, count in ((graph.layer_ops, graph.layers), (graph.head_ops, 1)):
        for kernel in partition(ops, tokens, budget):
            distinct += 1
            compute_s = _pipeline_compute_s(kernel.ops, tokens, hw)
            weights = sum(op.weight_bytes for op in kernel.ops)
            hbm_w, ddr_s = _weight_tier_times(weights, ddr_fraction, hw)
            kv = sum(op.kv_read_bytes + op.kv_write_bytes for op in kernel.ops)
            io = kernel.ops[0].in_bytes + kernel.ops[-1].out_bytes  # only the ends touch HBM
            hbm_bytes = hbm_w + kv + io
            memory_s = max(hbm_bytes / hbm_rate, ddr_s)
            colls = [op for op in kernel.ops if op.kind == "collective"]
            comm_s = sum(_collective_s(op, graph.tp, hw) for op in colls)
            # streaming: compute, memory and links overlap; the slowest bounds the kernel
            body = max(compute_s, memory_s, comm_s)
            kind = "fused_layer" if ops is graph.layer_ops else "fused_head"
            cost.add(kind, body, count)
            # a collective's latency is on the critical path: the next stage needs its result
            cost.add("collective_latency", hw.interconnect_latency_s * len(colls), count)
            cost.add("launch", _launch_s(hw, stack), count)
            cost.add("program_load", dev.program_load_s)  # same program for every layer
            cost.add_bytes("hbm", hbm_bytes, count)
            cost.add_bytes("ddr", weights * ddr_fraction, count)
            cost.add_bytes("interconnect", sum(op.comm_bytes for op in colls), count)
            cost.launches += count
            cost.flops += sum(op.flops for op in kernel.ops) * count
    cost.kernels = distinct
    return cost


def _unfused_pass(hw: Hardware, stack: Stack, graph: Graph, ddr_fraction: float) -> PassCost:
    dev = hw.device
    flops_rate = dev.peak_flops * dev.gemm_efficiency
    hbm_rate = dev.hbm.effective_bandwidth
    per_launch = _launch_s(hw, stack) + dev.program_load_s  # each kernel loads its program
    cost = PassCost()
    for op, count in graph.all_ops():
        if op.kind == "collective":
            t = _collective_s(op, graph.tp, hw) + hw.interconnect_latency_s
            cost.add("collective", t, count)
            cost.add("launch", per_launch, count)
            cost.add_bytes("interconnect", op.comm_bytes, count)
            cost.launches += count
            continue
        kernels, extra = op.op_kernels, op.op_bytes
        hbm_w, ddr_s = _weight_tier_times(op.weight_bytes, ddr_fraction, hw)
        hbm_bytes = op.fused_bytes - op.weight_bytes + hbm_w + extra
        t = max(op.flops / flops_rate, hbm_bytes / hbm_rate, ddr_s)
        cost.add(op.kind, t, count)
        cost.add("launch", per_launch * kernels, count)
        cost.add_bytes("hbm", hbm_bytes, count)
        cost.add_bytes("ddr", op.weight_bytes * ddr_fraction, count)
        cost.launches += kernels * count
        cost.flops += op.flops * count
    cost.kernels = cost.launches
    return cost
