"""`coeflow hw list|show`: the shipped hardware specs, resolved."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from coeflow.hw import list_hardware, list_stacks, load_hardware


def register(subparsers, help_text: str) -> None:
    p = subparsers.add_parser("hw", help=help_text, description=help_text)
    sub = p.add_subparsers(dest="hw_command", metavar="WHAT")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    ls = sub.add_parser("list", help="shipped hardware systems and software stacks",
                        description="List the shipped hardware systems and software stacks.")
    ls.set_defaults(func=run_list)
    show = sub.add_parser("show", help="one system's resolved spec",
                          description="Show a system's spec with units resolved and derived numbers.")
    show.add_argument("name", help="hardware name (see `coeflow hw list`) or a system .yaml path")
    show.add_argument("--json", action="store_true", help="print the spec as one JSON object")
    show.set_defaults(func=run_show)


def run_list(args: argparse.Namespace) -> int:
    print("hardware:")
    for name in list_hardware():
        hw = load_hardware(name)
        print(f"  {name:10s} {hw.count:3d} x {hw.device.name:16s} {hw.description}")
    print("software stacks:")
    for st in list_stacks():
        print(f"  {st.name:13s} [{st.kind}] {st.description}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    hw = load_hardware(args.name)
    if args.json:
        print(json.dumps(asdict(hw), indent=2))
        return 0
    d = hw.device
    print(f"{hw.name}: {hw.description}\n  file: {hw.source}")
    print(f"  {hw.count} x {d.name} ({d.kind}), default stack {hw.default_stack}")
    print(f"  compute: {d.peak_flops / 1e12:.0f} TFLOP/s BF16 per device, {d.units} units, "
          f"GEMM efficiency {d.gemm_efficiency:.2f}"
          + (f", {d.lanes} lanes x {d.stages} stages, implied clock {d.pcu_clock_hz / 1e9:.2f} GHz"
             if d.lanes else ""))
    print(f"  on-chip: {d.onchip_bytes / 2**20:.0f} MiB")
    for t in (d.hbm, d.ddr):
        if t:
            print(f"  {t.name}: {t.capacity / 2**30:.0f} GiB, {t.bandwidth / 1e9:.0f} GB/s peak, "
                  f"efficiency {t.efficiency:.2f} -> {t.effective_bandwidth / 1e9:.0f} GB/s")
    print(f"  node: {hw.count * d.hbm.capacity / 2**30:.0f} GiB HBM"
          + (f", {hw.count * d.ddr.capacity / 2**40:.1f} TiB DDR" if d.ddr else "")
          + f", {hw.count * d.peak_flops / 1e15:.2f} PFLOP/s")
    print(f"  interconnect: {hw.interconnect_bandwidth / 1e9:.0f} GB/s per device per direction, "
          f"{hw.interconnect_latency_s * 1e6:.1f} us per collective")
    print(f"  host: {hw.host_memory / 2**40:.2f} TiB DRAM, link {hw.host_link_bandwidth / 1e9:.0f} GB/s "
          f"x {hw.host_link_efficiency:.2f}")
    return 0
