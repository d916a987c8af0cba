"""Expert switching: copying an expert's weights from a slower tier into HBM.

On an SN40L node every socket copies its own shard from its own DDR in parallel; on a GPU
server the shards cross the host link (PCIe). Copies are bandwidth-bound: bytes over the
tier's achievable copy bandwidth."""

from __future__ import annotations

from coeflow.errors import ConfigError
from coeflow.hw.spec import Hardware

TIERS = ("hbm", "ddr", "host")


def copy_bandwidth(hw: Hardware, src: str, devices: int | None = None) -> float:
    """Aggregate bytes/s into the HBM of `devices` devices (default: all) from tier `src`."""
    n = devices or hw.count
    if src == "ddr":
        if hw.device.ddr is None:
            raise ConfigError(f"{hw.name} has no DDR tier on its devices; experts come from "
                              "'host' memory over the host link")
        ddr = hw.device.ddr
        return n * ddr.bandwidth * hw.device.copy_efficiency
    if src == "host":
        return hw.host_link_bandwidth * hw.host_link_efficiency
    raise ConfigError(f"unknown source tier {src!r}; one of ddr, host")


def switch_time_s(hw: Hardware, nbytes: float, src: str, dst: str = "hbm",
                  devices: int | None = None) -> float:
    """Seconds to bring `nbytes` of weights from `src` into `dst` (HBM)."""
    if src not in TIERS or dst not in TIERS:
        raise ConfigError(f"tiers are {', '.join(TIERS)}; got {src!r} -> {dst!r}")
    if dst != "hbm":
        raise ConfigError("experts are switched into HBM; dst must be 'hbm'")
    if src == "hbm":
        return 0.0
    return nbytes / copy_bandwidth(hw, src, devices)


def expert_store_tier(hw: Hardware) -> str:
    """Where a CoE keeps experts that are not in HBM: device DDR on an RDU, host DRAM on GPUs."""
    return "ddr" if hw.device.ddr is not None else "host"
