"""`coeflow trace generate|stats|run`: make a synthetic trace, summarise one, or play one
against a running server. Parsing and printing only; the work is in coeflow.trace."""

from __future__ import annotations

import argparse
import json
from collections import Counter

from coeflow.errors import ConfigError
from coeflow.extras import require


def _range(text: str) -> tuple[int, int]:
    """N or LO:HI."""
    try:
        parts = [int(x) for x in text.split(":")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected N or LO:HI") from None
    if len(parts) == 1:
        return parts[0], parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise argparse.ArgumentTypeError(f"{text!r}: expected N or LO:HI")


def register(subparsers, help_text: str) -> None:
    p = subparsers.add_parser("trace", help=help_text, description=help_text)
    sub = p.add_subparsers(dest="trace_command", metavar="WHAT")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    g = sub.add_parser("generate", help="write a synthetic JSONL trace",
                       description="Poisson arrivals (optionally shaped by a diurnal curve and "
                       "bursts) with Zipf popularity over experts; the first expert is the most "
                       "popular. Same arguments and seed, same trace.")
    who = g.add_mutually_exclusive_group(required=True)
    who.add_argument("--experts", help="comma-separated expert names, most popular first")
    who.add_argument("--coe", metavar="FILE", help="take the expert names from a CoE file (in its order)")
    who.add_argument("--n-experts", type=int, metavar="N", help="experts named e0..e{N-1}")
    g.add_argument("--out", required=True, metavar="FILE", help="trace file to write (JSONL)")
    g.add_argument("--rate", type=float, required=True, help="mean arrivals per second")
    g.add_argument("--requests", type=int, default=None, help="stop after this many requests")
    g.add_argument("--duration", type=float, default=None, metavar="SECONDS", help="stop at this time")
    g.add_argument("--zipf", type=float, default=1.0, help="popularity exponent s (0 = uniform; default 1)")
    g.add_argument("--prompt-tokens", type=_range, default=(128, 128), metavar="N|LO:HI",
                   help="prompt length in tokens, fixed or uniform in LO:HI (default 128)")
    g.add_argument("--max-tokens", type=_range, default=(20, 20), metavar="N|LO:HI",
                   help="output tokens asked, fixed or uniform in LO:HI (default 20)")
    g.add_argument("--diurnal-period", type=float, default=None, metavar="SECONDS",
                   help="rate x (1 + A sin(2 pi t / PERIOD)), e.g. 86400 for a day")
    g.add_argument("--diurnal-amplitude", type=float, default=0.5, metavar="A", help="default 0.5")
    g.add_argument("--burst", action="append", default=[], metavar="START:DURATION:FACTOR",
                   help="arrivals FACTOR times faster for DURATION seconds from START (repeatable)")
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=run_generate)

    s = sub.add_parser("stats", help="summarise a trace: requests, rate, experts, lengths",
                       description="Check a trace file and summarise it.")
    s.add_argument("trace", metavar="FILE")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=run_stats)

    r = sub.add_parser("run", help="play a trace against a running server, arrivals on time",
                       description="Open-loop replay: each request is sent at its arrival time "
                       "through the openai client (streaming) and timed. Writes one JSONL line per "
                       "request: the trace fields plus output_tokens, ttft_s, latency_s, "
                       "source_tier, switch_s, queued_s.")
    r.add_argument("--url", required=True, help="base URL of the server, e.g. http://127.0.0.1:8000/v1")
    r.add_argument("--trace", required=True, metavar="FILE")
    r.add_argument("--out", required=True, metavar="FILE", help="per-request results (JSONL)")
    r.add_argument("--api-key", default="unused")
    r.set_defaults(func=run_run)


def run_generate(args: argparse.Namespace) -> int:
    from coeflow.trace import Burst, TraceSpec, generate, write_trace
    if args.experts:
        experts = tuple(e.strip() for e in args.experts.split(",") if e.strip())
    elif args.coe:
        from coeflow.coefile import load_coe
        experts = tuple(load_coe(args.coe).expert_names)
    else:
        if args.n_experts < 1:
            raise ConfigError("--n-experts must be >= 1")
        experts = tuple(f"e{i}" for i in range(args.n_experts))
    spec = TraceSpec(experts, args.rate, args.requests, args.duration, args.zipf, args.prompt_tokens,
                     args.max_tokens, args.diurnal_period, args.diurnal_amplitude,
                     tuple(Burst.parse(b) for b in args.burst), args.seed)
    reqs = generate(spec)
    try:
        n = write_trace(args.out, reqs)
    except OSError as e:
        raise ConfigError(f"--out {args.out}: cannot write ({e.strerror or e})") from None
    span = reqs[-1].arrival_s if reqs else 0.0
    print(f"wrote {n} requests over {span:.1f} s to {args.out}")
    return 0


def trace_stats(reqs) -> dict:
    span = reqs[-1].arrival_s - reqs[0].arrival_s
    by_expert = Counter(r.expert for r in reqs)
    prompts = [r.prompt_tokens for r in reqs if r.prompt_tokens is not None]
    return {"requests": len(reqs), "span_s": span, "rate_per_s": (len(reqs) - 1) / span if span else None,
            "experts": dict(by_expert.most_common()),
            "prompt_tokens_mean": sum(prompts) / len(prompts) if prompts else None,
            "max_tokens_mean": sum(r.max_tokens for r in reqs) / len(reqs)}


def run_stats(args: argparse.Namespace) -> int:
    from coeflow.trace import read_trace
    st = trace_stats(read_trace(args.trace))
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    rate = "-" if st["rate_per_s"] is None else f"{st['rate_per_s']:.3g}/s"
    print(f"{st['requests']} requests over {st['span_s']:.1f} s ({rate}); "
          f"mean max_tokens {st['max_tokens_mean']:.1f}"
          + ("" if st["prompt_tokens_mean"] is None else f", mean prompt {st['prompt_tokens_mean']:.1f} tokens"))
    for name, n in list(st["experts"].items())[:20]:
        print(f"  {name:24s} {n:7d}  {100 * n / st['requests']:5.1f}%")
    if len(st["experts"]) > 20:
        print(f"  ... {len(st['experts']) - 20} more experts")
    return 0


def run_run(args: argparse.Namespace) -> int:
    require(("openai",), "coeflow trace run", "bench")
    from coeflow.trace import read_trace
    from coeflow.trace.client import play, summarise
    rows = play(args.url, read_trace(args.trace), api_key=args.api_key)
    with open(args.out, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(json.dumps(summarise(rows), indent=2))
    return 0
