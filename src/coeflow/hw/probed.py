"""A spec of this machine written by `coeflow hw probe` (coeflow.bench.probe), read back as
hardware data: the system schema of specs/ with the device and the stacks inline, plus what
the probe measured about the tiers around it (the disk read rate, the CPU's pointer-swap
device tier). The shipped loader (spec.load_hardware) reads devices by name only."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from coeflow.errors import ConfigError
from coeflow.hw.spec import Device, Hardware, Stack, _Fields, _tier

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


def load_probed(name: str) -> ProbedMachine:
    path = next((p for p in _candidates(name) if p.is_file()), None)
    if path is None:
        raise ConfigError(f"no probed spec {name!r} (run `coeflow hw probe`; looked in {PROBE_DIR})")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    f = _Fields(raw, str(path))
    bpp = int(f.get("probe.bytes_per_param", ""))
    d = _Fields(f.get("device"), f"{path}: device")
    hbm = _tier(d, "memory.hbm")
    # The operator graph counts 2-byte (bf16) weights and activations; an engine serving
    # `bpp`-byte values moves bpp/2 times as much, i.e. sees bandwidth scaled by 2/bpp.
    hbm = replace(hbm, bandwidth=hbm.bandwidth * 2 / bpp)
    device = Device(name=d.get("name"), kind="gpu", peak_flops=d.get("compute.peak_bf16", "FLOP/s"),
                    gemm_efficiency=d.get("compute.gemm_efficiency", ""), units=int(d.get("compute.units", "")),
                    onchip_bytes=d.get("onchip.capacity", "B"), onchip_units=0, lanes=0, stages=0,
                    fused_utilisation=1.0, hbm=hbm, ddr=None, copy_efficiency=1.0, program_load_s=0.0,
                    so_launch_s=0.0, ho_launch_s=0.0, clock_hz=0.0)
    stacks = {}
    for sname, s in f.get("stacks").items():
        sf = _Fields(s, f"{path}: stacks.{sname}")
        stacks[sname] = Stack(sname, "gpu", sf.get("description"), bool(sf.get("fuse_attention", default=False)),
                              bool(sf.get("fuse_norms", default=False)), bool(sf.get("fuse_elementwise", default=False)),
                              False, False, sf.get("kernel_overhead", "s"), 0.0, sf.get("invocation_overhead", "s"),
                              sf.get("step_overhead", "s"), 0.0)
    default = f.get("default_stack")
    if default not in stacks:
        raise ConfigError(f"{path}: default_stack {default!r} is not one of its stacks ({', '.join(stacks)})")
    hw = Hardware(name=f.get("name"), description=f.get("description", default=""), device=device, count=1,
                  interconnect_bandwidth=1.0, interconnect_latency_s=0.0, host_memory=f.get("host.memory", "B"),
                  host_reserve=f.get("host.reserve", "B"), host_link_bandwidth=float("inf"),
                  host_link_efficiency=1.0, device_reserve=0.0, default_stack=default, source=str(path))
    return ProbedMachine(hw, stacks[default], stacks, f.get("probe.disk_read_bandwidth", "B/s"),
                         f.get("probe.disk_read_latency", "s"), bool(f.get("probe.device_is_host")), bpp)


def probed_stack(machine: ProbedMachine, name: str) -> Stack:
    if name not in machine.stacks:
        raise ConfigError(f"{machine.hw.source}: no stack {name!r} (it has {', '.join(machine.stacks)})")
    return machine.stacks[name]
