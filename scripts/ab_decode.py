"""Decode speed of the engine at an earlier commit against the engine in this tree, in ONE
process, alternating: the before/after check of an engine change (issue #19's "speed must not
drop"). Separate `coeflow bench decode` runs follow the memory's swings on a shared machine
(their rows differ by more than the change being judged); here both engines run on the same
checkpoint under the same memory, round by round, and each round gives the ratio of their
step times.

The earlier commit's package is exported with `git archive` into a temporary directory and
renamed `coeflow_before` (imports and the torch op namespace included), so both import side by
side. Each round times `--new-tokens` decode steps of each engine (first and last token's
timestamps, as `coeflow bench decode` does), in alternating order.

    python scripts/ab_decode.py --before a8a042e --rounds 12
    python scripts/ab_decode.py --before a8a042e --dtypes bf16 --model tiny --json
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from coeflow.bench.decode import CONFIGS, make_checkpoint, streamed_bytes
from coeflow.bench.machine import machine_name

ROOT = Path(__file__).resolve().parent.parent


def export_before(rev: str, into: Path) -> None:
    """`src/coeflow` at `rev` as the package `coeflow_before` under `into`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src/coeflow"], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    pkg = into / "coeflow_before"
    (into / "src" / "coeflow").rename(pkg)
    for f in pkg.rglob("*"):
        if f.suffix in (".py", ".cpp", ".c", ".h"):
            text = f.read_text()
            text = re.sub(r"\bcoeflow\.", "coeflow_before.", text)
            text = re.sub(r"\b(from|import) coeflow\b", r"\1 coeflow_before", text)
            text = text.replace('Library("coeflow"', 'Library("coeflow_before"')
            text = text.replace("coeflow::", "coeflow_before::").replace("ops.coeflow.", "ops.coeflow_before.")
            text = text.replace("TORCH_LIBRARY_IMPL(coeflow,", "TORCH_LIBRARY_IMPL(coeflow_before,")
            f.write_text(text)


def timer(package: str, path: Path, dtype: str, prompt: list[int]):
    """gen(k) -> seconds between the first and the k-th token of `package`'s fused engine."""
    engine_mod = importlib.import_module(f"{package}.engine")
    eng = engine_mod.Engine.from_checkpoint(path, dtype=dtype, device="cpu", fused=True)
    params = engine_mod.SamplingParams

    def gen(k: int) -> float:
        times = [time.perf_counter() for _ in eng.stream([prompt], params(max_tokens=k, ignore_eos=True))]
        return times[-1] - times[0]
    gen(4)  # compile
    gen(4)
    return gen


def run(before: str, model: str, dtypes: list[str], rounds: int, new_tokens: int) -> dict:
    out: dict = {"machine": machine_name(), "before": before, "after": "working tree", "model": model,
                 "new_tokens": new_tokens, "rounds": rounds, "dtypes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        export_before(before, Path(tmp))
        sys.path.insert(0, tmp)
        path = make_checkpoint(model, Path(tmp) / "ckpt")
        from coeflow.model import ModelConfig, parse_dtype
        cfg = ModelConfig.from_dir(path)
        prompt = list(range(3, 19))
        for dtype in dtypes:
            gens = {"before": timer("coeflow_before", path, dtype, prompt), "after": timer("coeflow", path, dtype, prompt)}
            ms: dict[str, list[float]] = {"before": [], "after": []}
            for r in range(rounds):
                for side in (("before", "after") if r % 2 == 0 else ("after", "before")):
                    ms[side].append(gens[side](new_tokens + 1) / new_tokens * 1e3)
            ratios = [a / b for a, b in zip(ms["after"], ms["before"])]
            gb = streamed_bytes(cfg, parse_dtype(dtype)) / 1e9
            out["dtypes"][dtype] = {
                "ms_per_step": {s: statistics.median(v) for s, v in ms.items()},
                "weight_gbps": {s: gb / (statistics.median(v) / 1e3) for s, v in ms.items()},
                "after_over_before": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)},
                "rounds_ms": ms}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="the git revision to compare with (e.g. a commit hash)")
    ap.add_argument("--model", default="medium", choices=["tiny", "medium"])
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--rounds", type=int, default=12, help="timed runs of each engine (default 12)")
    ap.add_argument("--new-tokens", type=int, default=32, help="decode steps a run (default 32)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    report = run(args.before, args.model, args.dtypes, args.rounds, args.new_tokens)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['machine']}; {args.model}, batch 1, {args.rounds} alternating rounds of {args.new_tokens} steps")
    for dtype, r in report["dtypes"].items():
        ms, ratio = r["ms_per_step"], r["after_over_before"]
        print(f"  {dtype}: before {ms['before']:.2f} ms a step, after {ms['after']:.2f}; after/before "
              f"{ratio['median']:.3f} (rounds {ratio['min']:.3f}-{ratio['max']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
