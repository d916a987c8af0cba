"""`coeflow hw list|show|probe`: the shipped hardware specs, resolved; a spec of this machine."""

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
    pr = sub.add_parser("probe", help="measure this machine and write a local-cpu hardware spec",
                        description="Measure memory read bandwidth, matmul FLOP/s, disk (page cache) "
                        "read rate and latency, and the per-kernel, per-step and per-call overheads of "
                        "coeflow's eager and fused engines (fitted on two probe models), and write them "
                        "as a hardware spec (YAML, every number commented with how and when it was "
                        "measured). Use it with `coeflow simulate trace --hw local-cpu`. Takes about a "
                        "minute (the fused engine compiles).")
    pr.add_argument("--out", default=None, metavar="FILE",
                    help="where to write the spec (default: ~/.coeflow/hw/local-cpu.yaml, or "
                         "$COEFLOW_HW_DIR/local-cpu.yaml; --hw local-cpu finds it there)")
    pr.add_argument("--engines", default="eager,fused", help="engines to fit (default eager,fused)")
    pr.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (default 5)")
    pr.set_defaults(func=run_probe)


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


def run_probe(args: argparse.Namespace) -> int:
    from coeflow.extras import require
    require(("transformers",), "coeflow hw probe", "bench")
    import sys
    from coeflow.bench.probe import probe, write_spec
    from coeflow.hw.probed import PROBE_DIR
    engines = tuple(e.strip() for e in args.engines.split(",") if e.strip())
    bad = [e for e in engines if e not in ("eager", "fused")]
    if bad or not engines:
        from coeflow.errors import ConfigError
        raise ConfigError(f"--engines: choose from eager, fused (got {args.engines!r})")
    spec = probe(engines, repeats=args.repeats, progress=lambda s: print(f"probe: {s}", file=sys.stderr, flush=True))
    path = write_spec(spec, args.out or PROBE_DIR / "local-cpu.yaml")
    print(path.read_text())
    print(f"wrote {path}")
    return 0
