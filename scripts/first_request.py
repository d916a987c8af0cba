"""How the first requests after a server starts compare with steady ones. Starts `coeflow serve`
on a CoE, waits until /ready answers 200 (the warm-up done), lists the models (so the client's
own first-call costs are not timed), then sends one streamed completion to each expert in turn (each the first its expert serves), then `--steady` more
cycling over the experts; all one at a time, the same prompt, greedy, a fixed length. Prints
one JSON object: seconds to the first answer of /ready and to its first 200, each first
request's TTFT and latency, the steady medians, and the ratios.

    python scripts/first_request.py --coe demo-coe/coe.yaml"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time

import httpx
from openai import AsyncOpenAI

from coeflow.coefile import load_coe
from coeflow.server import free_port
from coeflow.trace.client import stream_completion


def wait_ready(base: str, proc: subprocess.Popen, t0: float, timeout_s: float) -> dict:
    answered = None
    while time.perf_counter() - t0 < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            r = httpx.get(f"{base}/ready", timeout=2)
            answered = answered or time.perf_counter() - t0
            if r.status_code == 200:
                return {"ready_answers_s": answered, "ready_ok_s": time.perf_counter() - t0}
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"the server was not ready in {timeout_s:.0f} s")


async def requests(url: str, experts: list[str], steady: int, max_tokens: int) -> tuple[list, list]:
    client = AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600)
    create = dict(prompt="Write a short note about the weather.", max_tokens=max_tokens, temperature=0,
                  extra_body={"ignore_eos": True})

    async def one(model: str) -> dict:
        s = await stream_completion(client, model=model, **create)
        return {"model": model, "ttft_s": s.first_s, "latency_s": s.last_s, "tokens": s.chunks}

    await client.models.list()  # the client's own first-call costs (connection, parsing) kept out
    firsts = [await one(e) for e in experts]
    rest = [await one(experts[i % len(experts)]) for i in range(steady)]
    return firsts, rest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--coe", required=True, help="the CoE file to serve")
    p.add_argument("--steady", type=int, default=25, help="requests after the first one per expert")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--timeout", type=float, default=900, help="seconds to wait for the server to be ready")
    args = p.parse_args()
    experts = load_coe(args.coe).expert_names
    port = free_port()
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "coeflow", "serve", "--coe", args.coe, "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        out = wait_ready(f"http://127.0.0.1:{port}", proc, t0, args.timeout)
        firsts, rest = asyncio.run(requests(f"http://127.0.0.1:{port}/v1", experts, args.steady, args.max_tokens))
    finally:
        proc.terminate()
        proc.wait(60)
    steady = {k: statistics.median(r[k] for r in rest) for k in ("ttft_s", "latency_s")}
    out.update(first_requests=firsts, steady_median=steady, server_log=log.name,
               first_over_steady={k: firsts[0][k] / steady[k] for k in steady},
               worst_first_over_steady={k: max(f[k] for f in firsts) / steady[k] for k in steady})
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
