"""How decode steps run, one implementation per module, chosen once per engine:

| runner | where |
| --- | --- |
| `EagerRunner` (eager.py) | `fused=False`: plain PyTorch on the engine's own skeleton |
| `CompiledRunner` (compiled.py) | the CPU without coeflow's kernels (or with `cpu_replay=False`): torch.compile, called without Dynamo after a cache's first step; other devices |
| `CpuReplayRunner` (cpu_replay.py) | the CPU with coeflow's AVX-512 kernels: the step replayed from one C call |
| `CudaGraphRunner` in `RunAhead` (cuda_graphs.py) | a GPU: the compiled step replayed as CUDA graphs, greedy tokens chosen a step ahead |
"""

from __future__ import annotations

import torch

from coeflow.engine.layers import DeviceLayers, NoLayers
from coeflow.engine.layers.cpu import CpuLayers
from coeflow.engine.layers.cuda import CudaLayers
from coeflow.engine.runners.base import StepRunner, decode_step
from coeflow.engine.runners.compiled import CompiledRunner
from coeflow.engine.runners.eager import EagerRunner
from coeflow.model import kernels
from coeflow.model.kernels import gpu_gemv
from coeflow.model.llama import Transformer


def decode_layers(device: torch.device, cpu_kernel: bool = True, triton_gemv: bool = True) -> DeviceLayers:
    """The layers compiled decode steps use on `device` (coeflow.engine.layers). `cpu_kernel`:
    coeflow's AVX-512 kernels where they load (a CPU with AVX-512 BF16, gcc to build them, and
    not COEFLOW_CPU_KERNEL=0); `triton_gemv`: the Triton kernel for one-row products where it
    can run (Triton installed, and not COEFLOW_GPU_GEMV=0)."""
    if device.type == "cuda":
        return CudaLayers(gemv=triton_gemv and gpu_gemv.available(device))
    if device.type == "cpu":
        return CpuLayers(kernels=cpu_kernel and kernels.load())
    return NoLayers()


def prefill_layers(device: torch.device) -> DeviceLayers:
    """The layers prefill (and the eager engine) runs with on `device`: on a GPU, q/k/v and
    gate/up as one product each where the weights lie back to back; elsewhere the model's own."""
    return CudaLayers(gemv=False) if device.type == "cuda" else NoLayers()


def choose_runner(model: Transformer, device: torch.device, fused: bool = True, cpu_kernel: bool = True,
                  cpu_replay: bool = True, triton_gemv: bool = True) -> StepRunner:
    """The runner for `model` (the engine's skeleton) on `device`: eager without `fused`;
    `cpu_replay=False` keeps the compiled step where the C replay would run (`decode_layers`
    for the others)."""
    if not fused:
        return EagerRunner(model)
    layers = decode_layers(device, cpu_kernel, triton_gemv)
    if device.type == "cuda":
        from coeflow.engine.runners.cuda_graphs import CudaGraphRunner, RunAhead
        return RunAhead(CudaGraphRunner(model, layers))
    if isinstance(layers, CpuLayers) and layers.kernels and cpu_replay:
        from coeflow.engine.runners.cpu_replay import CpuReplayRunner
        return CpuReplayRunner(model)
    return CompiledRunner(model, layers, direct=device.type == "cpu")


__all__ = ["StepRunner", "choose_runner", "decode_layers", "prefill_layers", "decode_step", "EagerRunner",
           "CompiledRunner"]
