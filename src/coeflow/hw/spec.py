"""Hardware as data: a system (node) of identical devices, each device with compute units and
memory tiers, plus the links between devices and to the host (LLMCompass-style hierarchy).

Spec files live in `specs/` (systems), `specs/devices/` and `specs/stacks.yaml` (software
stacks: what fuses and what each launch costs). Every number in them carries a comment with
its source or the reason it was chosen; docs/hardware-model.md collects them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from coeflow.errors import ConfigError
from coeflow.hw.units import parse_quantity

SPEC_DIR = Path(__file__).with_name("specs")


@dataclass(frozen=True)
class Tier:
    """One memory tier of a device: HBM, DDR. `efficiency` is the achievable fraction of the
    peak bandwidth for long streaming reads (what a weight-streaming kernel sees)."""

    name: str
    capacity: float  # bytes
    bandwidth: float  # bytes/s, peak
    efficiency: float

    @property
    def effective_bandwidth(self) -> float:
        return self.bandwidth * self.efficiency


@dataclass(frozen=True)
class Device:
    """One chip (GPU or RDU socket)."""

    name: str
    kind: str  # "gpu" or "rdu"
    peak_flops: float  # BF16 dense FLOP/s
    gemm_efficiency: float  # achievable fraction of peak on large GEMMs
    units: int  # SMs or PCUs
    onchip_bytes: float  # L2 (GPU) or PMU SRAM (RDU)
    onchip_units: int  # PMUs (RDU); 0 for GPUs
    lanes: int  # SIMD lanes per PCU (RDU; 0 for GPUs)
    stages: int  # pipeline stages per PCU (RDU; 0 for GPUs)
    fused_utilisation: float  # fraction of units a fused kernel can use (RDU)
    hbm: Tier
    ddr: Tier | None  # RDU only: the device's own DDR
    copy_efficiency: float  # DDR->HBM DMA fraction of DDR peak (RDU)
    program_load_s: float  # RDU: load a kernel's configuration
    so_launch_s: float  # RDU: host (software) orchestrated launch + sync per kernel
    ho_launch_s: float  # RDU: hardware (AGCU) orchestrated launch per kernel
    clock_hz: float  # GPU boost clock; device-side fixed costs scale with it (0: not given)

    @property
    def pcu_clock_hz(self) -> float:
        """RDU clock implied by the peak, units, lanes and stages (2 FLOP per MAC)."""
        return self.peak_flops / (2 * self.units * self.lanes * self.stages) if self.lanes else 0.0


@dataclass(frozen=True)
class Stack:
    """The software that runs the model: which operators fuse and what launches cost."""

    name: str
    kind: str  # "gpu" or "rdu"
    description: str
    fuse_attention: bool
    fuse_norms: bool
    fuse_elementwise: bool
    fuse_layer: bool  # RDU: whole decoder layer in one kernel
    hardware_orchestrated: bool  # RDU: AGCUs launch kernels, not the host
    kernel_overhead_s: float  # per kernel (GPU launch gap)
    collective_overhead_s: float  # software cost per collective on top of the link latency
    invocation_overhead_s: float  # per generate() call: host runtime, setup, first sync
    step_overhead_s: float  # per decode step: sampling, host round trip
    reference_clock_hz: float  # clock the per-kernel overheads were measured at (0: no scaling)

    def overhead_scale(self, device: Device) -> float:
        """Per-kernel and per-collective overheads are device-side work (launch processing,
        block scheduling, NVLink handshakes) counted in cycles, so they shrink on a faster
        clock. Invocation and step overheads are host-side and do not scale."""
        if not self.reference_clock_hz or not device.clock_hz:
            return 1.0
        return self.reference_clock_hz / device.clock_hz


@dataclass(frozen=True)
class Hardware:
    """A system: `count` identical devices joined by an interconnect, attached to a host."""

    name: str
    description: str
    device: Device
    count: int
    interconnect_bandwidth: float  # bytes/s per device per direction
    interconnect_latency_s: float  # per collective, hardware part
    host_memory: float  # bytes of host DRAM (GPU systems' expert store)
    host_reserve: float  # bytes of host DRAM kept for OS and runtime
    host_link_bandwidth: float  # bytes/s host -> devices, aggregate used for weight copies
    host_link_efficiency: float
    device_reserve: float  # bytes of HBM per device kept for runtime, context, buffers
    default_stack: str
    source: str  # the file it came from

    @property
    def kind(self) -> str:
        return self.device.kind


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


class _Fields:
    """Reads typed fields out of a nested mapping and names the file and key on error."""

    def __init__(self, data: dict[str, Any], where: str):
        self.data, self.where = data, where

    def get(self, key: str, unit: str | None = None, default: Any = ...) -> Any:
        node: Any = self.data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                if default is ...:
                    raise ConfigError(f"{self.where}: missing field {key!r}")
                return default
            node = node[part]
        if unit is None:
            return node
        return parse_quantity(node, unit, f"{self.where}: {key}")


def _tier(f: _Fields, key: str) -> Tier:
    return Tier(name=key.split(".")[-1], capacity=f.get(f"{key}.capacity", "B"),
                bandwidth=f.get(f"{key}.bandwidth", "B/s"),
                efficiency=f.get(f"{key}.efficiency", ""))


def load_device(name: str) -> Device:
    path = SPEC_DIR / "devices" / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in (SPEC_DIR / "devices").glob("*.yaml")))
        raise ConfigError(f"unknown device {name!r}; known devices: {known}")
    f = _Fields(_read_yaml(path), str(path))
    kind = f.get("kind")
    if kind not in ("gpu", "rdu"):
        raise ConfigError(f"{path}: kind must be 'gpu' or 'rdu', not {kind!r}")
    has_ddr = "ddr" in f.get("memory", default={})
    return Device(
        name=f.get("name"), kind=kind,
        peak_flops=f.get("compute.peak_bf16", "FLOP/s"),
        gemm_efficiency=f.get("compute.gemm_efficiency", ""),
        units=int(f.get("compute.units", "")),
        onchip_bytes=f.get("onchip.capacity", "B"),
        onchip_units=int(f.get("onchip.units", "", 0)),
        lanes=int(f.get("compute.lanes", "", 0)), stages=int(f.get("compute.stages", "", 0)),
        fused_utilisation=f.get("compute.fused_utilisation", "", 1.0),
        hbm=_tier(f, "memory.hbm"),
        ddr=_tier(f, "memory.ddr") if has_ddr else None,
        copy_efficiency=f.get("memory.ddr.copy_efficiency", "", 1.0) if has_ddr else 1.0,
        program_load_s=f.get("launch.program_load", "s", 0.0),
        so_launch_s=f.get("launch.software_orchestrated", "s", 0.0),
        ho_launch_s=f.get("launch.hardware_orchestrated", "s", 0.0),
        clock_hz=f.get("compute.clock", "Hz", 0.0),
    )


@lru_cache(maxsize=None)
def _stacks() -> dict[str, Stack]:
    path = SPEC_DIR / "stacks.yaml"
    out = {}
    for name, raw in _read_yaml(path).items():
        f = _Fields(raw, f"{path}: {name}")
        out[name] = Stack(
            name=name, kind=f.get("kind"), description=f.get("description"),
            fuse_attention=bool(f.get("fuse_attention", default=False)),
            fuse_norms=bool(f.get("fuse_norms", default=False)),
            fuse_elementwise=bool(f.get("fuse_elementwise", default=False)),
            fuse_layer=bool(f.get("fuse_layer", default=False)),
            hardware_orchestrated=bool(f.get("hardware_orchestrated", default=False)),
            kernel_overhead_s=f.get("kernel_overhead", "s", 0.0),
            collective_overhead_s=f.get("collective_overhead", "s", 0.0),
            invocation_overhead_s=f.get("invocation_overhead", "s", 0.0),
            step_overhead_s=f.get("step_overhead", "s", 0.0),
            reference_clock_hz=f.get("reference_clock", "Hz", 0.0),
        )
    return out


def list_stacks() -> list[Stack]:
    return list(_stacks().values())


def load_stack(name: str, kind: str | None = None) -> Stack:
    """A software stack by name; `kind` checks it matches the hardware ("gpu"/"rdu")."""
    stacks = _stacks()
    if name not in stacks:
        raise ConfigError(f"unknown software stack {name!r}; known: {', '.join(stacks)}")
    stack = stacks[name]
    if kind is not None and stack.kind != kind:
        fits = ", ".join(s.name for s in stacks.values() if s.kind == kind)
        raise ConfigError(f"stack {name!r} is for {stack.kind} hardware; for {kind} use: {fits}")
    return stack


def list_hardware() -> list[str]:
    """Names of the shipped systems (files in specs/, without .yaml)."""
    return sorted(p.stem for p in SPEC_DIR.glob("*.yaml") if p.stem != "stacks")


@lru_cache(maxsize=64)
def load_hardware(name_or_path: str) -> Hardware:
    """A shipped system by name (`coeflow hw list`) or a system YAML file by path."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        path = SPEC_DIR / f"{name_or_path}.yaml"
        if name_or_path == "stacks" or not path.is_file():
            raise ConfigError(f"unknown hardware {name_or_path!r}; known: "
                              f"{', '.join(list_hardware())} (or a path to a system .yaml)")
    f = _Fields(_read_yaml(path), str(path))
    device = load_device(f.get("device"))
    hw = Hardware(
        name=f.get("name"), description=f.get("description", default=""), device=device,
        count=int(f.get("devices", "")),
        interconnect_bandwidth=f.get("interconnect.bandwidth", "B/s"),
        interconnect_latency_s=f.get("interconnect.latency", "s"),
        host_memory=f.get("host.memory", "B"),
        host_reserve=f.get("host.reserve", "B"),
        host_link_bandwidth=f.get("host.link_bandwidth", "B/s"),
        host_link_efficiency=f.get("host.link_efficiency", ""),
        device_reserve=f.get("device_reserve", "B"),
        default_stack=f.get("default_stack"),
        source=str(path),
    )
    load_stack(hw.default_stack, device.kind)
    return hw
