"""How many of the experts' training-task prompts the demo's router should learn from: retrain
the router of a built demo with N task prompts an expert (instead of the build's), and report
its accuracy on the hand-written held-out prompt sets and on 200 held-out tasks (each to its
domain's expert).

    python scripts/demo_router_tasks.py demo-coe 0 10 100

Figures: docs/demo.md (the router paragraph)."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from coeflow.coefile import load_coe
from coeflow.demo.datafiles import DATA_DIR
from coeflow.demo.tasks import DOMAINS, tasks
from coeflow.router import examples_from_coe, read_jsonl, train_router


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("demo", type=Path, help="a built demo's directory (seed 0)")
    ap.add_argument("counts", type=int, nargs="+", help="task prompts an expert to try")
    args = ap.parse_args()
    coe = load_coe(args.demo / "coe.yaml")
    rows = [json.loads(line) for line in open(args.demo / "data" / "router_train.jsonl", encoding="utf-8")]
    built = {t.prompt for d in DOMAINS for t in tasks(d, "train", 1000, 0)}
    generated = [r for r in rows if r["prompt"] not in built]  # the build's prompts less its task prompts
    held = [(t.prompt, d) for d in DOMAINS for t in tasks(d, "heldout", 40, 0)]
    for n in args.counts:
        extra = [{"prompt": t.prompt, "expert": d} for d in DOMAINS for t in tasks(d, "train", n, 0)]
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False, encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in generated + extra)
        router = train_router(examples_from_coe(coe) + read_jsonl(f.name, coe.expert_names), coe.expert_names,
                              coe.fallback, seed=0)
        Path(f.name).unlink()

        def accuracy(pairs: list[tuple[str, str]]) -> float:
            return sum(router.route(p).expert == e for p, e in pairs) / len(pairs)

        sets = {name: [(r["prompt"], r["expert"]) for r in map(json.loads, open(DATA_DIR / f"{name}.jsonl"))]
                for name in ("heldout_prompts_final", "heldout_prompts_fresh", "heldout_prompts")}
        print(f"{n:4d} task prompts an expert: " + ", ".join(f"{k} {accuracy(v):.3f}" for k, v in sets.items())
              + f", held-out tasks {accuracy(held):.3f}")


if __name__ == "__main__":
    main()
