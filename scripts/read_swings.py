"""How the memory read rate of the benchmark machine moves, and which read bounds a decode step:
the three measurements behind the read limit of `coeflow bench decode` (docs/benchmarks-log.md,
"The read limit"). Reconstructed from the log's description; the original scripts were not kept.

    python scripts/read_swings.py runs [--runs 25] [--dtype bf16]
        The bench's medium batch-1 row of the fused engine, run N times, each 32-token run
        between two single reads of 1 GiB: how far the read moves from one run to the next and
        how a run compares with the reads right beside it.
    python scripts/read_swings.py buffers [--rounds 3000] [--mb 228]
        Two huge-page buffers of the medium bf16 step's size, one of constants and one of
        random values, read alternately: whether the swings depend on the data (page merging
        by the host would favour the constant one) or are the machine's.
    python scripts/read_swings.py prefetch [--rounds 200] [--mb 1024]
        The plain C read loop against the same loop with software prefetch (as the products
        prefetch), alternating, split by the plain loop's rate: which read is the limit.

Needs coeflow's AVX-512 CPU kernels (their C read loop is the reference read); elsewhere it
says so and exits."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from coeflow.model import hostmem, kernels


def huge_page_floats(mb: int) -> torch.Tensor:
    """A float32 buffer of `mb` MB in huge pages, as the engine's weights are."""
    return hostmem.empty(mb * 1_000_000 // 64 * 64).view(torch.float32)


def c_read(x: torch.Tensor, prefetch: bool = False) -> float:
    """GB/s of one pass of coeflow's C read loop over `x`, on torch's threads."""
    t = time.perf_counter()
    kernels.read_sum(x, prefetch=prefetch)
    return x.numel() * 4 / (time.perf_counter() - t) / 1e9


def runs(n: int = 25, dtype_name: str = "bf16", model: str = "medium", new_tokens: int = 32,
         read_mb: int = 1024, agree: float = 0.10) -> dict:
    from coeflow.bench.decode import make_checkpoint, streamed_bytes
    from coeflow.engine import Engine, SamplingParams
    from coeflow.model import ModelConfig, parse_dtype

    buf = huge_page_floats(read_mb).fill_(1)
    with tempfile.TemporaryDirectory() as root:
        path = make_checkpoint(model, Path(root))
        cfg, dtype = ModelConfig.from_dir(path), parse_dtype(dtype_name)
        gbytes = streamed_bytes(cfg, dtype) / 1e9
        eng = Engine.from_checkpoint(path, dtype=dtype, device="cpu", fused=True)
        # the bench's prompt: 16 tokens drawn as bench decode draws its first row's
        prompt = torch.randint(3, cfg.vocab_size, (1, 16), generator=torch.Generator().manual_seed(1)).tolist()
        params = SamplingParams(max_tokens=1 + new_tokens, ignore_eos=True)

        def step_s() -> float:
            stamps = [time.perf_counter() for _ in eng.stream(prompt, params)]
            return (stamps[-1] - stamps[0]) / new_tokens

        step_s()  # warm-up and compilation
        rows = []
        for _ in range(n):
            before = c_read(buf)
            s = step_s()
            after = c_read(buf)
            rows.append(dict(read_before=before, read_after=after, weight_gbps=gbytes / s,
                             pct_of_mean_read=100 * gbytes / s / ((before + after) / 2)))
    return dict(model=model, dtype=dtype_name, runs=rows, **summarise_runs(rows, agree))


def summarise_runs(rows: list[dict], agree: float) -> dict:
    """The reads' and the step's ranges, and each run against the mean of its two reads, apart
    for the runs whose two reads agree within `agree` (the others met the memory changing)."""
    def reads_agree(r: dict) -> bool:
        return max(r["read_before"], r["read_after"]) <= (1 + agree) * min(r["read_before"], r["read_after"])

    def span(rs: list[dict], key: str) -> list[float] | None:
        return [min(r[key] for r in rs), max(r[key] for r in rs)] if rs else None
    near = [r for r in rows if reads_agree(r)]
    far = [r for r in rows if not reads_agree(r)]
    reads = [v for r in rows for v in (r["read_before"], r["read_after"])]
    return dict(read_gbps_range=[min(reads), max(reads)], weight_gbps_range=span(rows, "weight_gbps"),
                reads_agree=len(near), pct_when_reads_agree=span(near, "pct_of_mean_read"),
                pct_otherwise=span(far, "pct_of_mean_read"))


def buffers(rounds: int = 3000, mb: int = 228, fast: float = 75.0) -> dict:
    const = huge_page_floats(mb).fill_(1)
    rand = huge_page_floats(mb)
    rand.copy_(torch.rand(rand.numel(), generator=torch.Generator().manual_seed(0)))
    c_read(const), c_read(rand)
    pairs = []
    t0 = time.perf_counter()
    for i in range(rounds):  # which buffer goes first alternates
        if i % 2 == 0:
            a = c_read(const)
            b = c_read(rand)
        else:
            b = c_read(rand)
            a = c_read(const)
        pairs.append((a, b))
    fast_rounds = [b for a, b in pairs if a >= fast]
    return dict(rounds=rounds, seconds=time.perf_counter() - t0,
                constant_gbps_range=[min(a for a, _ in pairs), max(a for a, _ in pairs)],
                random_gbps_range=[min(b for _, b in pairs), max(b for _, b in pairs)],
                constant_median=statistics.median(a for a, _ in pairs),
                random_median=statistics.median(b for _, b in pairs),
                rounds_constant_fast=len(fast_rounds), fast_threshold_gbps=fast,
                random_median_when_constant_fast=statistics.median(fast_rounds) if fast_rounds else None)


def prefetch(rounds: int = 200, mb: int = 1024, fast: float = 65.0) -> dict:
    buf = huge_page_floats(mb).fill_(1)
    c_read(buf), c_read(buf, prefetch=True)
    split: dict[str, list[float]] = {"slow": [], "fast": []}
    for i in range(rounds):
        if i % 2 == 0:
            plain, pf = c_read(buf), c_read(buf, prefetch=True)
        else:
            pf, plain = c_read(buf, prefetch=True), c_read(buf)
        split["fast" if plain >= fast else "slow"].append(100 * (pf / plain - 1))
    return dict(rounds=rounds, fast_threshold_gbps=fast, threads=torch.get_num_threads(),
                **{f"{k}_rounds": len(v) for k, v in split.items()},
                **{f"prefetch_gain_pct_{k}": statistics.median(v) if v else None for k, v in split.items()})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("runs", help="a decode row's runs against the reads beside each")
    r.add_argument("--runs", type=int, default=25)
    r.add_argument("--dtype", default="bf16", choices=["fp32", "bf16"])
    r.add_argument("--model", default="medium", choices=["tiny", "medium"])
    b = sub.add_parser("buffers", help="a buffer of constants against one of random values")
    b.add_argument("--rounds", type=int, default=3000)
    b.add_argument("--mb", type=int, default=228)
    b.add_argument("--fast", type=float, default=75.0, help="GB/s from which a round counts as fast")
    p = sub.add_parser("prefetch", help="the plain C read loop against the one with prefetch")
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--mb", type=int, default=1024)
    p.add_argument("--fast", type=float, default=65.0, help="GB/s (plain loop) from which a round counts as fast")
    args = ap.parse_args(argv)
    if not kernels.load():
        print("read_swings: coeflow's CPU kernels do not load on this machine (they need AVX-512 "
              "with BF16); their C read loop is the reference read, so there is nothing to measure",
              file=sys.stderr)
        return 2
    if args.what == "runs":
        out = runs(args.runs, args.dtype, args.model)
    elif args.what == "buffers":
        out = buffers(args.rounds, args.mb, args.fast)
    else:
        out = prefetch(args.rounds, args.mb, args.fast)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
