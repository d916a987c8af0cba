"""`coeflow simulate model|paper|trace|compare`: cost a model on modelled hardware, reproduce
the SN40L paper's results next to ours, replay a trace through the CoE core on modelled
hardware, or compare machines on one trace. Parsing and printing only; the work is
coeflow.hw and coeflow.sim."""

from __future__ import annotations

import argparse
import json

from coeflow.errors import ConfigError
from coeflow.extras import require
from coeflow.hw import generation_cost, list_hardware, list_models, load_hardware, load_shape
from coeflow.scheduler.decisions import SCHEDULES
from coeflow.sim.replay import ReplayOptions
from coeflow.store.policies import ONLINE_POLICIES

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
    m.add_argument("--weights", default=None, choices=["int8", "int4"],
                   help="the products' weights quantized as `coeflow quantize` writes them (int8 a scale a row, "
                        "int4 a scale a group of 128): fewer bytes read and moved, the same FLOPs "
                        "(default: as the config says; a quantized checkpoint's config.json says so itself)")
    m.add_argument("--group-size", type=int, default=None, metavar="N",
                   help="with --weights: inputs sharing one scale (default: a row for int8, 128 for int4)")
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

    t = sub.add_parser("trace", help="replay a trace through the CoE core on modelled hardware",
                       description="Replay a JSONL trace (coeflow trace generate, or serve "
                       "--record-trace) through the same scheduler and eviction code the server "
                       "runs, on a simulated clock driven by the hardware model. Prints a summary "
                       "(throughput, p50/p99 TTFT and latency, loads by tier, bytes moved, "
                       "utilisation) and the per-request timeline (--timeline, or --json).")
    t.add_argument("--hw", required=True, help=f"hardware name ({', '.join(list_hardware())}), "
                   "local-cpu (after `coeflow hw probe`), or a spec .yaml path")
    _replay_args(t)
    _node_args(t)
    t.add_argument("--timeline", metavar="FILE", default=None, help="write the per-request timeline (JSONL)")
    t.add_argument("--json", action="store_true", help='one JSON object: {"summary": ..., "timeline": [...]}')
    t.set_defaults(func=run_trace)

    c = sub.add_parser("compare", help="one trace on several machines, side by side, with a plot",
                       description="Replay one trace on each --hw and print the summaries side by side; "
                       "--plot writes a PNG (latency percentiles, throughput, utilisation).")
    c.add_argument("--hw", action="append", required=True, help="hardware (repeat: --hw sn40l-8 --hw dgx-h100)")
    _replay_args(c)
    _node_args(c)
    c.add_argument("--plot", metavar="FILE.png", default=None, help="write a PNG comparison plot")
    c.add_argument("--json", action="store_true", help="one JSON object: hardware -> summary")
    c.set_defaults(func=run_compare)


def _replay_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trace", required=True, metavar="FILE", help="JSONL trace")
    who = p.add_argument_group("the CoE (one of)")
    who.add_argument("--coe", metavar="FILE", help="a CoE file: its experts' config.json shapes, its router for "
                     "'coe' requests, its tokenizers for prompts given as text")
    who.add_argument("--experts", type=int, metavar="N", help="N experts e0..e{N-1} of --expert-config (no checkpoints)")
    who.add_argument("--expert-config", default="llama2-7b", metavar="CONFIG",
                     help=f"shipped name ({', '.join(list_models())}) or config.json (default llama2-7b)")
    who.add_argument("--expert-weights", default=None, choices=["int8", "int4"],
                     help="--experts quantized as `coeflow quantize` writes them (a CoE file's experts: "
                          "as their config.json or `quantize:` says)")
    who.add_argument("--expert-delta", type=int, default=None, choices=[1, 2, 4, 8], metavar="BITS",
                     help="--experts as BITS-bit deltas (1, 2, 4, 8) from one base of --expert-config, as `coeflow "
                          "delta` writes them: the tiers below the device hold the deltas and the base once, a "
                          "switch moves the delta and rebuilds the expert (a CoE file's delta experts say so "
                          "themselves)")
    p.add_argument("--router", metavar="CONFIG", default=None,
                   help="cost a router of this shape (a prefill + one token) on the compute before queueing, "
                        "on up to --router-batch prompts at once (default: routing costs nothing)")
    p.add_argument("--router-batch", type=int, default=ReplayOptions.router_batch,
                   help=f"prompts the router reads at once (default {ReplayOptions.router_batch})")
    p.add_argument("--procedure", default="server", choices=["server", "paper"],
                   help="server: coeflow's scheduler (prefetch on arrival, batching; default). paper: "
                        "Samba-CoE's procedure (route a batch, copy each expert, run each pair at batch 1)")
    p.add_argument("--schedule", default=None, choices=SCHEDULES,
                   help="the server's schedule: continuous (requests join and leave between steps, experts "
                        "take turns by --slice; the server's default) or static (a batch runs to completion). "
                        "The paper procedure is static")
    p.add_argument("--slice", type=float, default=None, metavar="SECONDS", dest="slice_s",
                   help=f"continuous: an expert keeps the device this long once others wait "
                        f"(default {ReplayOptions.slice_s:g})")
    p.add_argument("--prefill-chunk", type=int, default=None, metavar="TOKENS",
                   help=f"continuous: prompt tokens prefilled in one step (default {ReplayOptions.prefill_chunk})")
    p.add_argument("--kv-mem", default=None, metavar="BYTES",
                   help="continuous: the KV cache's budget; a request joins when it holds its prompt and output "
                        "(default: batch 8 at 4K tokens of the largest expert)")
    p.add_argument("--max-batch", type=int, default=None,
                   help=f"largest batch per expert (default {ReplayOptions.max_batch})")
    p.add_argument("--max-wait", type=float, default=None, metavar="SECONDS",
                   help=f"starvation bound (default {ReplayOptions.max_wait_s:g})")
    p.add_argument("--policy", default=None,
                   help=f"eviction policy: {', '.join(ONLINE_POLICIES)} (default {ReplayOptions.policy})")
    p.add_argument("--device-mem", default=None, metavar="BYTES",
                   help="device tier (HBM) budget; default: HBM less reserves, router and KV cache")
    p.add_argument("--host-mem", default=None, metavar="BYTES",
                   help="host tier (DDR on an RDU, host DRAM on a GPU server) budget; default: all of it")
    p.add_argument("--start-tier", default=None, choices=["host", "disk"],
                   help="where experts are at t=0 (default: disk if the spec has a disk rate, else host)")
    p.add_argument("--stack", default=None, help="software stack (default: the hardware's)")
    p.add_argument("--tp", type=int, default=None, help="tensor-parallel degree (default: every device)")


def _node_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("nodes (as coeflow serve --ray spreads a CoE)")
    g.add_argument("--nodes", type=int, default=1, metavar="K",
                   help="K machines of --hw behind one ingress, each with its own tiers; a request goes to a node "
                        "that holds its expert, an expert held nowhere to the node holding the fewest (default 1)")
    g.add_argument("--hop-ms", type=float, default=None, metavar="MS",
                   help="added to each request's first token and end for the ingress-to-node network hop "
                        "(default 1 ms, with --nodes above 1: an RPC between two machines of a datacenter)")
    g.add_argument("--p99-ttft", type=float, default=None, metavar="SECONDS",
                   help="instead of --nodes: the fewest nodes (up to --max-nodes) whose p99 TTFT is at most this")
    g.add_argument("--max-nodes", type=int, default=64, metavar="K", help="--p99-ttft's search bound (default 64)")


def _simulate(args: argparse.Namespace, hw: str):
    from coeflow.sim.modelled import ModelledBackend
    from coeflow.sim.replay import replay
    from coeflow.sim.workload import coe_from_file, coe_of_copies, options_for, resolve, resolve_machine
    from coeflow.store.tiers import parse_bytes
    from coeflow.trace import read_trace
    if (args.coe is None) == (args.experts is None):
        raise ConfigError("give --coe FILE or --experts N (with --expert-config)")
    if args.coe and (args.expert_weights or args.expert_delta):
        raise ConfigError("--expert-weights and --expert-delta apply to --experts; a CoE file's experts say it "
                          "themselves (`quantize:`, a quantized or a delta checkpoint)")
    if args.expert_weights and args.expert_delta:
        raise ConfigError("give --expert-weights or --expert-delta, not both: coeflow makes deltas of dense bases")
    coe = coe_from_file(args.coe) if args.coe else coe_of_copies(
        args.experts, args.expert_config, int(args.expert_weights[3:]) if args.expert_weights else None,
        delta_bits=args.expert_delta)
    machine = resolve_machine(hw, args.stack, args.tp)
    router = load_shape(args.router) if args.router else None
    backend = ModelledBackend(machine, coe.shapes, router)
    start = args.start_tier or ("disk" if machine.disk_read_bps is not None else "host")
    if args.procedure == "paper" and args.schedule == "continuous":
        raise ConfigError("the paper procedure runs each batch to completion: drop --schedule continuous")
    opts = options_for(args.procedure, schedule=args.schedule, slice_s=args.slice_s, prefill_chunk=args.prefill_chunk,
                       kv_mem=parse_bytes(args.kv_mem) if args.kv_mem else None,
                       max_batch=args.max_batch, max_wait_s=args.max_wait, policy=args.policy,
                       device_mem=parse_bytes(args.device_mem) if args.device_mem else None,
                       host_mem=parse_bytes(args.host_mem) if args.host_mem else None, start_tier=start,
                       route_on_compute=True if router else None, router_batch=args.router_batch)
    reqs = resolve(read_trace(args.trace), coe)
    if args.nodes < 1 or args.max_nodes < 1:
        raise ConfigError("--nodes and --max-nodes must be at least 1")
    if args.nodes == 1 and args.p99_ttft is None:
        return machine, replay(backend, reqs, opts)
    from coeflow.sim.nodes import HOP_S, fewest_nodes, replay_on_nodes
    hop = HOP_S if args.hop_ms is None else args.hop_ms / 1e3

    def on(k: int):
        return replay_on_nodes(lambda: ModelledBackend(machine, coe.shapes, router), reqs, opts, k, hop)
    if args.p99_ttft is not None:
        return machine, fewest_nodes(on, args.p99_ttft, args.max_nodes)
    return machine, on(args.nodes)


def _fmt_s(x) -> str:
    return "-" if x is None else f"{x * 1e3:.2f} ms" if x < 1 else f"{x:.3f} s"


def _print_summary(s: dict, indent: str = "  ") -> None:
    print(f"{indent}requests {s['requests']} over {s['makespan_s']:.3f} s: {s['throughput_rps']:.3f} req/s, "
          f"{s['output_tokens_per_s']:.1f} output tokens/s")
    print(f"{indent}TTFT     p50 {_fmt_s(s['ttft_p50_s'])}, p99 {_fmt_s(s['ttft_p99_s'])}")
    print(f"{indent}latency  p50 {_fmt_s(s['latency_p50_s'])}, p99 {_fmt_s(s['latency_p99_s'])}")
    print(f"{indent}requests by the tier their expert was in: "
          + ", ".join(f"{k} {v}" for k, v in sorted(s["requests_by_source_tier"].items())))
    print(f"{indent}loads: " + ", ".join(f"{k} {v} ({s['bytes_moved'][k] / 1e9:.2f} GB)" for k, v in s["loads"].items())
          + "; evictions: " + ", ".join(f"{k} {v}" for k, v in s["evictions"].items()))
    print(f"{indent}utilisation: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in s["utilisation"].items()))
    if "nodes" in s:
        reqs, experts = ([n[k] for n in s["node_shares"]] for k in ("requests", "experts"))
        print(f"{indent}nodes {s['nodes']} (a {s['hop_s'] * 1e3:g} ms hop to each): {min(reqs)}-{max(reqs)} requests "
              f"and {min(experts)}-{max(experts)} experts a node")
    if "p99_ttft_target_s" in s:
        tried = ", ".join(f"{k}: {_fmt_s(v)}" for k, v in s["p99_ttft_by_nodes"].items())
        verdict = "the fewest that meet" if s["target_met"] else "NOT met by the most tried,"
        print(f"{indent}{verdict} p99 TTFT <= {_fmt_s(s['p99_ttft_target_s'])}: {s['nodes']} nodes "
              f"(p99 by nodes tried: {tried})")


def run_trace(args: argparse.Namespace) -> int:
    machine, res = _simulate(args, args.hw)
    timeline = [r.to_dict() for r in res.records]
    if args.timeline:
        with open(args.timeline, "w") as f:
            for row in timeline:
                f.write(json.dumps(row) + "\n")
    if args.json:
        print(json.dumps({"hardware": machine.name, "summary": res.summary(), "timeline": timeline}, indent=1))
        return 0
    print(f"{args.trace} on {machine.name} (stack {machine.stack or machine.hw.default_stack}, "
          f"TP{machine.devices}), procedure {args.procedure}")
    _print_summary(res.summary())
    print(f"  {'#':>5s} {'expert':>10s} {'arrival':>10s} {'start':>10s} {'TTFT':>10s} {'latency':>10s} "
          f"{'from':>8s} {'switch':>10s} {'batch':>5s}")
    shown = timeline if len(timeline) <= 20 else timeline[:10] + timeline[-10:]
    for i, r in enumerate(shown):
        if len(timeline) > 20 and i == 10:
            print(f"  {'...':>5s} ({len(timeline) - 20} more; --timeline FILE writes all)")
        print(f"  {r['index']:5d} {r['expert']:>10s} {r['arrival_s']:10.4f} {r['start_s']:10.4f} "
              f"{_fmt_s(r['ttft_s']):>10s} {_fmt_s(r['latency_s']):>10s} {r['source_tier']:>8s} "
              f"{_fmt_s(r['switch_s']):>10s} {r['batch']:5d}")
    return 0


COMPARE_ROWS = [("throughput_rps", "throughput (req/s)", 1.0), ("output_tokens_per_s", "output tokens/s", 1.0),
                ("ttft_p50_s", "TTFT p50 (ms)", 1e3), ("ttft_p99_s", "TTFT p99 (ms)", 1e3),
                ("latency_p50_s", "latency p50 (ms)", 1e3), ("latency_p99_s", "latency p99 (ms)", 1e3),
                ("latency_mean_s", "latency mean (ms)", 1e3), ("makespan_s", "makespan (s)", 1.0)]


def run_compare(args: argparse.Namespace) -> int:
    out = {}
    for hw in args.hw:
        machine, res = _simulate(args, hw)
        out[machine.name] = res.summary()
    if args.plot:
        require(("matplotlib",), "--plot", "plots")
        from coeflow.sim.plots import compare_plot
        try:
            compare_plot(out, args.plot, title=f"{args.trace} ({args.procedure} procedure)")
        except OSError as e:
            raise ConfigError(f"--plot {args.plot}: cannot write ({e})") from None
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    names = list(out)
    print(f"{'':26s}" + "".join(f"{n:>16s}" for n in names))
    for key, label, scale in COMPARE_ROWS:
        print(f"{label:26s}" + "".join(f"{out[n][key] * scale:16.4g}" for n in names))
    for label, fn in (("loads host->device", lambda s: s["loads"]["host->device"]),
                      ("loads disk->host", lambda s: s["loads"]["disk->host"]),
                      ("GB moved host->device", lambda s: s["bytes_moved"]["host->device"] / 1e9),
                      ("compute utilisation %", lambda s: 100 * s["utilisation"]["compute"]),
                      ("device mem bandwidth %", lambda s: 100 * s["utilisation"]["device memory bandwidth"]),
                      ("link host->device busy %", lambda s: 100 * s["utilisation"]["link host->device"])):
        print(f"{label:26s}" + "".join(f"{fn(out[n]):16.4g}" for n in names))
    if "nodes" in out[names[0]]:
        print(f"{'nodes':26s}" + "".join(f"{out[n]['nodes']:16d}" for n in names))
    if args.p99_ttft is not None:
        met = {n: out[n]["target_met"] for n in names}
        print(f"fewest nodes with p99 TTFT <= {_fmt_s(args.p99_ttft)}: "
              + ", ".join(f"{n} {out[n]['nodes']}" + ("" if met[n] else f" (not met at --max-nodes)") for n in names))
    if len(names) > 1:
        base = names[0]
        for n in names[1:]:
            print(f"{n} / {base}: mean latency {out[n]['latency_mean_s'] / out[base]['latency_mean_s']:.2f}x, "
                  f"makespan {out[n]['makespan_s'] / out[base]['makespan_s']:.2f}x")
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


def run_model(args: argparse.Namespace) -> int:
    hw = load_hardware(args.hw)
    shape = load_shape(args.model)
    if args.group_size is not None and not args.weights:
        raise ConfigError("--group-size applies with --weights int8|int4")
    if args.weights:
        from coeflow.sim.workload import quantized_shape
        shape = quantized_shape(shape, int(args.weights[3:]), args.group_size)
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
        require(("matplotlib",), "--plots", "plots")
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
