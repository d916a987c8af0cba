"""Two fused engines on one checkpoint, differing in one `Engine` option, compared in one process
against the memory read measured right beside each of their runs: the in-process comparisons of
docs/benchmarks-log.md ("CPU decode: the step replayed from C", the table of the replay with
greedy in C against the direct call). Reconstructed from the log's description of the method;
the original script was not kept.

Method: rounds of "C read of as many bytes as a step streams, the engine's tokens (a 16-token
prompt, 17 tokens: the first is prefill's, the step time is the 16 after it), C read again",
the two engines taking turns. A round is kept when its two reads agree within 8%, and sorted
by their mean: fast (65 GB/s or more), mid (55-65), slow (under 55). Each engine's figure per
class is the median over its kept rounds of the step's weight rate over the mean of the round's
two reads. Single runs of `coeflow bench decode` follow the memory's swings; this pairs the two
things compared under the same memory.

    python scripts/paired_decode.py --dtype bf16 --off cpu_replay --minutes 5
    python scripts/paired_decode.py --dtype fp32 --off cpu_replay --rounds 400

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
from typing import Callable

import torch

from coeflow.model import hostmem, kernels

CLASSES = (("fast", 65.0), ("mid", 55.0), ("slow", 0.0))  # GB/s from which a round is in the class


def c_read(x: torch.Tensor) -> float:
    """GB/s of one pass of coeflow's plain C read loop over `x`, on torch's threads."""
    t = time.perf_counter()
    kernels.read_sum(x)
    return x.numel() * 4 / (time.perf_counter() - t) / 1e9


def speed_class(gbps: float) -> str:
    return next(name for name, floor in CLASSES if gbps >= floor)


def run(option: str, dtype_name: str = "bf16", model: str = "medium", rounds: int | None = None,
        minutes: float = 5.0, agree: float = 0.08, base: dict | None = None,
        read: Callable[[torch.Tensor], float] = c_read) -> dict:
    """`option` names an `Engine` keyword that is True by default; one engine keeps it, the
    other has it off. `base`: keywords both engines get."""
    from coeflow.bench.decode import make_checkpoint, streamed_bytes
    from coeflow.engine import Engine, SamplingParams
    from coeflow.model import ModelConfig, parse_dtype

    base = dict(fused=True) if base is None else base
    with tempfile.TemporaryDirectory() as root:
        path = make_checkpoint(model, Path(root))
        cfg, dtype = ModelConfig.from_dir(path), parse_dtype(dtype_name)
        nbytes = streamed_bytes(cfg, dtype)
        buf = hostmem.empty(nbytes // 64 * 64).view(torch.float32).fill_(1)
        engines = {f"{option} on": Engine.from_checkpoint(path, dtype=dtype, device="cpu", **base),
                   f"{option} off": Engine.from_checkpoint(path, dtype=dtype, device="cpu", **base, **{option: False})}
        prompt = torch.randint(3, cfg.vocab_size, (1, 16), generator=torch.Generator().manual_seed(1)).tolist()
        params = SamplingParams(max_tokens=17, ignore_eos=True)

        def step_s(eng: Engine) -> float:
            stamps = [time.perf_counter() for _ in eng.stream(prompt, params)]
            return (stamps[-1] - stamps[0]) / 16

        for eng in engines.values():
            step_s(eng)  # warm-up and compilation
        read(buf)
        kept: dict[str, dict[str, list[float]]] = {n: {c: [] for c, _ in CLASSES} for n in engines}
        done, dropped, deadline = 0, 0, time.monotonic() + 60 * minutes
        while (done < rounds) if rounds is not None else (time.monotonic() < deadline):
            for name, eng in engines.items():
                before = read(buf)
                s = step_s(eng)
                after = read(buf)
                if max(before, after) > (1 + agree) * min(before, after):
                    dropped += 1
                    continue
                mean = (before + after) / 2
                kept[name][speed_class(mean)].append(100 * nbytes / 1e9 / s / mean)
            done += 1
    return dict(model=model, dtype=dtype_name, option=option, rounds_each=done, dropped=dropped,
                results={n: {c: dict(rounds=len(v), pct_of_read=statistics.median(v) if v else None)
                             for c, v in by_class.items()} for n, by_class in kept.items()})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--off", default="cpu_replay",
                    help="the Engine option (True by default) the second engine has off (default cpu_replay)")
    ap.add_argument("--dtype", default="bf16", choices=["fp32", "bf16"])
    ap.add_argument("--model", default="medium", choices=["tiny", "medium"])
    when = ap.add_mutually_exclusive_group()
    when.add_argument("--minutes", type=float, default=5.0, help="how long to alternate (default 5)")
    when.add_argument("--rounds", type=int, default=None, help="rounds per engine instead of a time")
    args = ap.parse_args(argv)
    if not kernels.load():
        print("paired_decode: coeflow's CPU kernels do not load on this machine (they need AVX-512 "
              "with BF16); their C read loop is the reference read, so there is nothing to measure",
              file=sys.stderr)
        return 2
    print(json.dumps(run(args.off, args.dtype, args.model, args.rounds, args.minutes), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
