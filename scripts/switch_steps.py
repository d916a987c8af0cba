"""What a switch between two experts of one shape costs the decode loop: each expert keeps
four sequences in the engine's KV pool, and the engine alternates between the experts every
K steps (attach the other's weights, decode K steps). Prints ms a step for each K.

    python scripts/switch_steps.py --coe demo-coe/coe.yaml --steps-per-turn 1 5 1 5"""

from __future__ import annotations

import argparse
import time

import torch

from coeflow.coefile import load_coe
from coeflow.engine import Engine, SamplingParams
from coeflow.model import load_weights


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--coe", required=True)
    p.add_argument("--steps-per-turn", type=int, nargs="+", default=[1, 5, 1, 5])
    p.add_argument("--turns", type=int, default=40)
    args = p.parse_args()
    paths = [e.path for e in load_coe(args.coe).experts][:2]
    engine = Engine.from_checkpoint(paths[0], fused=True)
    weights = [load_weights(path, engine.cfg, engine.dtype, engine.device) for path in paths]
    engine.warm(8)
    budget = args.turns * max(args.steps_per_turn) * len(args.steps_per_turn) // 2 + 1
    params = SamplingParams(max_tokens=min(budget, engine.pool.max_positions - 16), ignore_eos=True)
    seqs = []
    for i, w in enumerate(weights):
        engine.set_weights(w, str(i))
        seqs.append([engine.open([1, 5, 6, 7, 8 + i], params) for _ in range(4)])
        for s in seqs[-1]:
            engine.prefill(s)
    with torch.inference_mode():
        for k in args.steps_per_turn:
            t, n = time.perf_counter(), 0
            for turn in range(args.turns):
                i = turn % 2
                engine.set_weights(weights[i], str(i))
                for _ in engine.decode(seqs[i], k):
                    n += 1
            print(f"{k} steps a turn: {(time.perf_counter() - t) / n * 1e3:.2f} ms a step")


if __name__ == "__main__":
    main()
