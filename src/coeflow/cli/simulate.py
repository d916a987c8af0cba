"""`coeflow simulate model|paper`: cost a model on modelled hardware, or reproduce the
SN40L paper's results next to ours. Parsing and printing only; the work is coeflow.hw/.sim."""

from __future__ import annotations

import argparse
import json

from coeflow.errors import ConfigError
from coeflow.hw import generation_cost, list_hardware, list_models, load_hardware, load_shape

GiB = 2**30


def register(subparsers, help_text: str) -> None:
    p = subparsers.add_parser("simulate", help=help_text, description=help_text)
    sub = p.add_subparsers(dest="simulate_command", metavar="WHAT")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    m = sub.add_parser("model", help="latency of one model on one hardware: prefill + decode",
                       description="Cost prefill of BATCH prompts of PROMPT tokens and GEN output "
                       "tokens each, with a breakdown per kernel class, per memory tier and launches.")
    m.add_argument("--hw", required=True,
                   help=f"hardware name ({', '.join(list_hardware())}) or a system .yaml path")
    m.add_argument("--model", required=True,
                   help=f"config.json path or shipped name ({', '.join(list_models())})")
    m.add_argument("--batch", type=int, default=1, help="sequences decoded together (default 1)")
    m.add_argument("--prompt", type=int, default=128, help="prompt tokens per sequence (default 128)")
    m.add_argument("--gen", type=int, default=20, help="output tokens per sequence (default 20)")
    m.add_argument("--tp", type=int, default=None,
                   help="tensor-parallel degree (default: every device of the hardware)")
    m.add_argument("--stack", default=None,
                   help="software stack from specs/stacks.yaml (default: the hardware's; "
                   "GPU: hf-eager, gpt-fast, nemo; RDU: rdu-unfused, rdu-fused-so, rdu-fused-ho)")
    m.add_argument("--json", action="store_true", help="print one JSON object (total_s, ttft_s, tpot_s, ...)")
    m.set_defaults(func=run_model)

    q = sub.add_parser("paper", help="the SN40L paper's results next to the model's, with errors",
                       description="Table V, footprint, fusion ranges, Table IV and GPU decode "
                       "anchors: predicted, reference, error. Rows marked 'cal' were used to "
                       "calibrate; all others are held out.")
    q.add_argument("--json", action="store_true",
                   help='print one JSON object with a "rows" list of {name, predicted, reference, error_pct, ...}')
    q.add_argument("--plots", metavar="DIR", default=None,
                   help="also write PNG plots into DIR (created if missing)")
    q.set_defaults(func=run_paper)


def run_model(args: argparse.Namespace) -> int:
    hw = load_hardware(args.hw)
    shape = load_shape(args.model)
    cost = generation_cost(hw, shape, args.batch, args.prompt, args.gen, args.tp, args.stack)
    if args.json:
        print(json.dumps(cost.to_dict(), indent=2))
        return 0
    print(f"{shape.name} ({shape.num_params() / 1e9:.2f}B params) on {hw.name} "
          f"({hw.device.name}), TP{cost.tp}, stack {cost.stack}")
    print(f"batch {cost.batch}, prompt {cost.prompt}, gen {cost.gen}")
    print(f"  total {cost.total_s * 1e3:10.2f} ms")
    print(f"  TTFT  {cost.ttft_s * 1e3:10.2f} ms")
    print(f"  TPOT  {cost.tpot_s * 1e3:10.3f} ms   ({1 / cost.tpot_s:.1f} tokens/s per sequence)")
    for label, p, n in (("prefill pass", cost.prefill, 1), ("decode steps", cost.decode_step, cost.gen - 1)):
        if n == 0:
            continue
        print(f"  {label} (x{n}): {p.time_s * n * 1e3:.2f} ms, {p.launches * n} launches "
              f"({p.kernels} distinct kernels per pass)")
        for kind, s in sorted(p.by_kind.items(), key=lambda kv: -kv[1]):
            if s * n > 0:
                print(f"      {kind:20s} {s * n * 1e3:10.3f} ms  {100 * s / p.time_s:5.1f}%")
        tiers = ", ".join(f"{t} {b * n / 1e9:.3f} GB" for t, b in p.bytes_by_tier.items())
        print(f"      bytes per device: {tiers}")
    pl = cost.placement
    print(f"  per device: weights {pl.weights / GiB:.2f} GiB, KV {pl.kv_cache / GiB:.2f} GiB, "
          f"HBM used {pl.hbm_used / GiB:.2f} of {pl.hbm_usable / GiB:.2f} GiB"
          + (f", DDR {pl.ddr_used / GiB:.2f} GiB (weights streamed from DDR)" if pl.ddr_used else ""))
    return 0


def run_paper(args: argparse.Namespace) -> int:
    from coeflow.sim.paper import as_json, report, summary

    rows = report()
    if args.plots:
        from coeflow.sim.plots import write_plots
        try:
            written = write_plots(args.plots)
        except OSError as e:
            raise ConfigError(f"--plots {args.plots}: cannot write ({e})") from None
    if args.json:
        out = as_json(rows)
        if args.plots:
            out["plots"] = written
        print(json.dumps(out, indent=2))
        return 0
    group = None
    for r in rows:
        if r.group != group:
            group = r.group
            print(f"\n{group}")
            print(f"  {'':66s} {'ours':>10s} {'paper':>10s} {'error':>8s}  target")
        tgt = "" if r.met is None else f"{'met' if r.met else 'MISSED'} ({r.target})"
        tgt += " cal" if r.calibration else ""
        print(f"  {r.name:66s} {r.predicted:10.4g} {r.reference:10.4g} {r.error_pct:+7.1f}%  {tgt}"
              + (f"\n  {'':66s} {r.note}" if r.note else ""))
    print("\nSummary (rows with a target; 'cal' rows were used for calibration):")
    for g, s in summary(rows).items():
        mx = s["held_out_max_abs_error_pct"]
        print(f"  {g:12s} {s['met']}/{s['rows_with_target']} met; held-out max |error| "
              + ("-" if mx is None else f"{mx:.1f}%") + f"; calibration rows {s['calibration_rows']}")
    if args.plots:
        print("\nplots: " + ", ".join(written))
    return 0
