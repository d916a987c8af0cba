"""GPU mapping: kernel by kernel. Each kernel is bounded by its compute (tensor cores at an
achievable fraction of peak) or by its HBM traffic (intermediates go through HBM between
kernels), plus the stack's launch gap; collectives add their link time and latency. Which
operators fuse (flash attention, fused norms, elementwise epilogues) is the stack's choice.

The roofline-per-kernel-plus-overheads form is GenZ's and LLMCompass's; the per-kernel launch
gap and per-collective latency are what pure rooflines miss at small batch (LLM-Viewer's
1.5-1.9x over-estimate of throughput)."""

from __future__ import annotations

from coeflow.hw.costs import PassCost, all_gather_s, ring_all_reduce_s
from coeflow.hw.graph import Graph, Op
from coeflow.hw.spec import Hardware, Stack


def _kernels_and_bytes(op: Op, stack: Stack) -> tuple[int, float]:
    """How many kernels an op launches under this stack, and the HBM bytes they move."""
    if op.kind in ("gemm", "embedding"):
        return 1, op.fused_bytes
    fused = {"attention": stack.fuse_attention, "norm": stack.fuse_norms,
             "elementwise": stack.fuse_elementwise, "sampling": stack.fuse_elementwise}[op.kind]
    if not fused:
        return op.eager_kernels, op.fused_bytes + op.eager_bytes
    if op.kind == "elementwise":
        return 0, op.kv_write_bytes  # folded into the neighbouring GEMM's epilogue
    return 1, op.fused_bytes


def gpu_pass(hw: Hardware, stack: Stack, graph: Graph) -> PassCost:
    dev = hw.device
    flops_rate = dev.peak_flops * dev.gemm_efficiency
    hbm_rate = dev.hbm.effective_bandwidth
    link = hw.interconnect_bandwidth
    scale = stack.overhead_scale(dev)
    launch_s = stack.kernel_overhead_s * scale
    collective_s = stack.collective_overhead_s * scale
    cost = PassCost()
    for op, count in graph.all_ops():
        if op.kind == "collective":
            move = (ring_all_reduce_s(op.comm_bytes, graph.tp, link) if "reduce" in op.name
                    else all_gather_s(op.comm_bytes, graph.tp, link))
            t = move + hw.interconnect_latency_s + collective_s
            cost.add("collective", t, count)
            cost.add_bytes("interconnect", op.comm_bytes * 2 * (graph.tp - 1) / graph.tp, count)
            cost.launches += count
            continue
        kernels, nbytes = _kernels_and_bytes(op, stack)
        compute_s = op.flops / flops_rate
        memory_s = nbytes / hbm_rate
        # roofline per op: the slower of compute and HBM traffic
        cost.add(op.kind, max(compute_s, memory_s), count)
        cost.add("launch", launch_s * kernels, count)
        cost.add_bytes("hbm", nbytes, count)
        cost.launches += kernels * count
        cost.flops += op.flops * count
    cost.kernels = cost.launches
    return cost
