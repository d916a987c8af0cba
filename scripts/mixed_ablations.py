"""The mixed workload (`coeflow bench serve --workload mixed`) against coeflow alone at several
--slice values, without its prefix cache, and against the static schedule once: what the
slice trades (TTFT against TPOT) and what the prefix cache saves. Prints one JSON object.

    python scripts/mixed_ablations.py --coe demo-coe/coe.yaml --rate 8 --requests 160 --slices 0.02 0.05 0.2"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from coeflow.bench.mixed import run_mixed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--coe", required=True)
    p.add_argument("--rate", type=float, default=8.0)
    p.add_argument("--requests", type=int, default=160)
    p.add_argument("--slices", type=float, nargs="+", default=[0.02, 0.05, 0.2, 0.5])
    args = p.parse_args()
    out = {"static": run_mixed(Path(args.coe), args.requests, args.rate, servers=("static",))["static"]}
    for s in args.slices:
        out[f"coeflow slice {s}"] = run_mixed(Path(args.coe), args.requests, args.rate, servers=("coeflow",),
                                              slice_s=s)["coeflow"]
    out["coeflow, no prefix cache"] = run_mixed(Path(args.coe), args.requests, args.rate, servers=("coeflow",),
                                                prefix_cache=False)["coeflow"]
    print(json.dumps({"rate": args.rate, "requests": args.requests, "runs": out}, indent=2))


if __name__ == "__main__":
    main()
