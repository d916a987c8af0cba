"""The two schedules without HTTP: the demo CoE's scheduler, warmed, given a burst of the mixed
workload's requests at once (`--requests`, 60 by default), run to the end. Prints tokens/s and
how many steps ran at each batch size.

    python scripts/schedule_steps.py --coe demo-coe/coe.yaml --schedule static
    python scripts/schedule_steps.py --coe demo-coe/coe.yaml --schedule continuous"""

from __future__ import annotations

import argparse
import threading
import time

from coeflow.bench.mixed import mixed_trace
from coeflow.engine import SamplingParams
from coeflow.scheduler import Failed, Finished, GenRequest
from coeflow.server import ServerOptions, build_server


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--coe", required=True)
    p.add_argument("--schedule", default="continuous", choices=["continuous", "static"])
    p.add_argument("--requests", type=int, default=60)
    args = p.parse_args()
    srv = build_server(args.coe, ServerOptions(schedule=args.schedule))
    tok = next(iter(srv.runtimes.values())).tokenizer
    trace = mixed_trace(list(srv.runtimes), args.requests, 100.0, 512, lambda t: len(tok.encode(t)), seed=0)
    srv.scheduler.start()
    srv.scheduler.warm_up(srv.warm_up)
    ended, tokens = threading.Semaphore(0), [0]

    def sink(ev) -> None:
        if hasattr(ev, "token_id"):
            tokens[0] += 1
        if isinstance(ev, (Finished, Failed)):
            ended.release()
    t0 = time.perf_counter()
    for r in trace:
        srv.scheduler.submit(GenRequest(r.expert, tok.encode(r.prompt),
                                        SamplingParams(max_tokens=r.max_tokens, ignore_eos=True), sink))
    for _ in trace:
        ended.acquire()
    dt = time.perf_counter() - t0
    rows = dict(sorted(srv.scheduler.step_rows.items()))
    print(f"{args.schedule}: {tokens[0]} tokens in {dt:.2f} s ({tokens[0] / dt:.0f} tok/s), "
          f"{sum(rows.values())} steps, by batch size {rows}")
    srv.scheduler.stop(1)
    srv.store.close()


if __name__ == "__main__":
    main()
