"""Hardware as data: a system (node) of identical devices, each device with compute units and
memory tiers, plus the links between devices and to the host (LLMCompass-style hierarchy).

Spec files live in `specs/` (systems), `specs/devices/` and `specs/stacks.yaml` (software
stacks: what fuses and what each launch costs). Every number in them carries a comment with
its source or the reason it was chosen; docs/hardware-model.md collects them. Each file is
checked by a pydantic model of its shape: an unknown key is an error naming the file and the
key, and a quantity must carry a unit of the right dimension.

The dataclasses below are what the rest of coeflow uses (`dataclasses.replace` varies them in
sensitivity studies); the `_...Doc` models describe the files and are read into them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BeforeValidator, TypeAdapter, ValidationError

from coeflow.errors import ConfigError
from coeflow.hw.units import parse_quantity
from coeflow.validation import FileModel, file_error

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


def _quantity(unit: str, kind: type = float) -> Any:
    """A field holding a quantity with `unit` ("1.8 TB/s", "64 GiB"), read in base units; an
    int field takes whole numbers only."""
    def parse(value: Any) -> Any:
        try:
            number = parse_quantity(value, unit)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        if kind is int and number != int(number):
            raise ValueError(f"must be a whole number, got {value!r}")
        return kind(number)
    return Annotated[kind, BeforeValidator(parse)]


Bytes = _quantity("B")
BytesPerS = _quantity("B/s")
FlopPerS = _quantity("FLOP/s")
Seconds = _quantity("s")
Hertz = _quantity("Hz")
Number = _quantity("")  # a plain number or a percentage
Count = _quantity("", int)
Kind = Literal["gpu", "rdu"]


class TierDoc(FileModel):
    capacity: Bytes
    bandwidth: BytesPerS
    efficiency: Number

    def tier(self, name: str) -> Tier:
        return Tier(name=name, capacity=self.capacity, bandwidth=self.bandwidth, efficiency=self.efficiency)


class _DdrDoc(TierDoc):
    copy_efficiency: Number = 1.0  # DDR->HBM DMA fraction of DDR peak


class _MemoryDoc(FileModel):
    hbm: TierDoc
    ddr: _DdrDoc | None = None  # RDU only


class _ComputeDoc(FileModel):
    peak_bf16: FlopPerS
    gemm_efficiency: Number
    units: Count
    lanes: Count = 0
    stages: Count = 0
    fused_utilisation: Number = 1.0
    clock: Hertz = 0.0


class _OnchipDoc(FileModel):
    capacity: Bytes
    units: Count = 0


class _LaunchDoc(FileModel):
    program_load: Seconds = 0.0
    software_orchestrated: Seconds = 0.0
    hardware_orchestrated: Seconds = 0.0


class _DeviceDoc(FileModel):
    """specs/devices/NAME.yaml"""

    name: str
    kind: Kind
    compute: _ComputeDoc
    onchip: _OnchipDoc
    memory: _MemoryDoc
    launch: _LaunchDoc = _LaunchDoc()


class _InterconnectDoc(FileModel):
    bandwidth: BytesPerS
    latency: Seconds


class _HostDoc(FileModel):
    memory: Bytes
    reserve: Bytes
    link_bandwidth: BytesPerS
    link_efficiency: Number


class _SystemDoc(FileModel):
    """specs/NAME.yaml, or a user's system file"""

    name: str
    description: str = ""
    device: str
    devices: Count
    interconnect: _InterconnectDoc
    host: _HostDoc
    device_reserve: Bytes
    default_stack: str


class StackDoc(FileModel):
    """One entry of specs/stacks.yaml"""

    kind: Kind
    description: str
    fuse_attention: bool = False
    fuse_norms: bool = False
    fuse_elementwise: bool = False
    fuse_layer: bool = False
    hardware_orchestrated: bool = False
    kernel_overhead: Seconds = 0.0
    collective_overhead: Seconds = 0.0
    invocation_overhead: Seconds = 0.0
    step_overhead: Seconds = 0.0
    reference_clock: Hertz = 0.0


_StacksFile = dict[str, StackDoc]


def read_spec_file(path: Path, shape: Any) -> Any:
    """The YAML file at `path`, checked against `shape` (a model or a type of models)."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return TypeAdapter(shape).validate_python(data)
    except ValidationError as e:
        raise file_error(e, path, shape) from None


def load_device(name: str) -> Device:
    path = SPEC_DIR / "devices" / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in (SPEC_DIR / "devices").glob("*.yaml")))
        raise ConfigError(f"unknown device {name!r}; known devices: {known}")
    d: _DeviceDoc = read_spec_file(path, _DeviceDoc)
    ddr, launch = d.memory.ddr, d.launch
    return Device(
        name=d.name, kind=d.kind, peak_flops=d.compute.peak_bf16, gemm_efficiency=d.compute.gemm_efficiency,
        units=d.compute.units, onchip_bytes=d.onchip.capacity, onchip_units=d.onchip.units,
        lanes=d.compute.lanes, stages=d.compute.stages, fused_utilisation=d.compute.fused_utilisation,
        hbm=d.memory.hbm.tier("hbm"), ddr=ddr.tier("ddr") if ddr else None,
        copy_efficiency=ddr.copy_efficiency if ddr else 1.0,
        program_load_s=launch.program_load, so_launch_s=launch.software_orchestrated,
        ho_launch_s=launch.hardware_orchestrated, clock_hz=d.compute.clock,
    )


@lru_cache(maxsize=None)
def _stacks() -> dict[str, Stack]:
    docs: dict[str, StackDoc] = read_spec_file(SPEC_DIR / "stacks.yaml", _StacksFile)
    return {name: stack_from_doc(name, s) for name, s in docs.items()}


def stack_from_doc(name: str, s: StackDoc) -> Stack:
    return Stack(
        name=name, kind=s.kind, description=s.description, fuse_attention=s.fuse_attention,
        fuse_norms=s.fuse_norms, fuse_elementwise=s.fuse_elementwise, fuse_layer=s.fuse_layer,
        hardware_orchestrated=s.hardware_orchestrated, kernel_overhead_s=s.kernel_overhead,
        collective_overhead_s=s.collective_overhead, invocation_overhead_s=s.invocation_overhead,
        step_overhead_s=s.step_overhead, reference_clock_hz=s.reference_clock,
    )


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
            probe = ("; 'local-cpu' is this machine as `coeflow hw probe` measures it, for `simulate trace` "
                     "and `compare`" if name_or_path == "local-cpu" else "")
            raise ConfigError(f"unknown hardware {name_or_path!r}; known: "
                              f"{', '.join(list_hardware())} (or a path to a system .yaml){probe}")
    s: _SystemDoc = read_spec_file(path, _SystemDoc)
    device = load_device(s.device)
    hw = Hardware(
        name=s.name, description=s.description, device=device, count=s.devices,
        interconnect_bandwidth=s.interconnect.bandwidth, interconnect_latency_s=s.interconnect.latency,
        host_memory=s.host.memory, host_reserve=s.host.reserve, host_link_bandwidth=s.host.link_bandwidth,
        host_link_efficiency=s.host.link_efficiency, device_reserve=s.device_reserve,
        default_stack=s.default_stack, source=str(path),
    )
    load_stack(hw.default_stack, device.kind)
    return hw
