"""A spec of this machine written by `coeflow hw probe` (coeflow.bench.probe), read back as
hardware data: the system schema of specs/ with the device and the stacks inline, plus what
the probe measured about the tiers around it (the disk read rate, the CPU's pointer-swap
device tier). The shipped loader (spec.load_hardware) reads devices by name only."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from coeflow.errors import ConfigError
from coeflow.hw.spec import (Bytes, BytesPerS, Count, Device, FlopPerS, Hardware, Number, Seconds, Stack, StackDoc,
                             TierDoc, read_spec_file, stack_from_doc)
from coeflow.validation import FileModel

PROBE_DIR = Path(os.environ.get("COEFLOW_HW_DIR", Path.home() / ".coeflow" / "hw"))


@dataclass(frozen=True)
class ProbedMachine:
    hw: Hardware
    stack: Stack  # the default stack
    stacks: dict[str, Stack]
    disk_read_bps: float
    disk_read_latency_s: float
    device_is_host: bool
    bytes_per_param: int


def _candidates(name: str) -> list[Path]:
    return [Path(name), PROBE_DIR / f"{name}.yaml"]


def is_probed_spec(name: str) -> bool:
    for p in _candidates(name):
        if p.suffix in (".yaml", ".yml") and p.is_file():
            try:
                return "probe" in (yaml.safe_load(p.read_text()) or {})
            except yaml.YAMLError:
                return False
    return False


class _ProbedCompute(FileModel):
    peak_bf16: FlopPerS
    units: Count
    gemm_efficiency: Number


class _ProbedOnchip(FileModel):
    capacity: Bytes


class _ProbedMemory(FileModel):
    hbm: TierDoc


class _ProbedDevice(FileModel):
    name: str
    kind: Literal["gpu"]  # costed kernel by kernel, as a GPU is
    compute: _ProbedCompute
    onchip: _ProbedOnchip
    memory: _ProbedMemory


class _ProbedHost(FileModel):
    memory: Bytes
    reserve: Bytes


class _ProbeFacts(FileModel):
    date: datetime.date | str
    machine: str
    torch_threads: Count
    disk_read_bandwidth: BytesPerS
    disk_read_latency: Seconds
    device_is_host: bool
    bytes_per_param: Count
    engine_fits: dict[str, Any]  # the timings each stack's overheads were fitted on: a record


class _ProbedSpec(FileModel):
    """What `coeflow hw probe` writes: a system with its device and stacks inline."""

    name: str
    description: str = ""
    devices: Literal[1]
    host: _ProbedHost
    default_stack: str
    device: _ProbedDevice
    stacks: dict[str, StackDoc]
    probe: _ProbeFacts


def load_probed(name: str) -> ProbedMachine:
    path = next((p for p in _candidates(name) if p.is_file()), None)
    if path is None:
        raise ConfigError(f"no probed spec {name!r} (run `coeflow hw probe`; looked in {PROBE_DIR})")
    s: _ProbedSpec = read_spec_file(path, _ProbedSpec)
    if s.default_stack not in s.stacks:
        raise ConfigError(f"{path}: default_stack {s.default_stack!r} is not one of its stacks "
                          f"({', '.join(s.stacks)})")
    d, bpp = s.device, s.probe.bytes_per_param
    # The operator graph counts 2-byte (bf16) weights and activations; an engine serving
    # `bpp`-byte values moves bpp/2 times as much, i.e. sees bandwidth scaled by 2/bpp.
    hbm = replace(d.memory.hbm.tier("hbm"), bandwidth=d.memory.hbm.bandwidth * 2 / bpp)
    device = Device(name=d.name, kind=d.kind, peak_flops=d.compute.peak_bf16,
                    gemm_efficiency=d.compute.gemm_efficiency, units=d.compute.units,
                    onchip_bytes=d.onchip.capacity, onchip_units=0, lanes=0, stages=0, fused_utilisation=1.0,
                    hbm=hbm, ddr=None, copy_efficiency=1.0, program_load_s=0.0, so_launch_s=0.0,
                    ho_launch_s=0.0, clock_hz=0.0)
    stacks = {name: stack_from_doc(name, doc) for name, doc in s.stacks.items()}
    hw = Hardware(name=s.name, description=s.description, device=device, count=1, interconnect_bandwidth=1.0,
                  interconnect_latency_s=0.0, host_memory=s.host.memory, host_reserve=s.host.reserve,
                  host_link_bandwidth=float("inf"), host_link_efficiency=1.0, device_reserve=0.0,
                  default_stack=s.default_stack, source=str(path))
    return ProbedMachine(hw, stacks[s.default_stack], stacks, s.probe.disk_read_bandwidth,
                         s.probe.disk_read_latency, s.probe.device_is_host, bpp)


def probed_stack(machine: ProbedMachine, name: str) -> Stack:
    if name not in machine.stacks:
        raise ConfigError(f"{machine.hw.source}: no stack {name!r} (it has {', '.join(machine.stacks)})")
    return machine.stacks[name]
