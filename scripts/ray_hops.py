"""Where `coeflow serve --ray` adds latency to a request: the same routes timed one request at
a time against one process and against Ray Serve (a three-node cluster on this machine, two
expert replicas), each process decoding with one thread. `GET /v1/models` and `POST /v1/route`
never leave the ingress (Serve's HTTP proxy hop alone); a chat completion of 1 token adds the
ingress-to-replica call and the events relayed back; one of 8 tokens shows what each further
relayed token costs. Then Ray Serve's own floor on the same cluster, with no coeflow in it: an
HTTP deployment that answers at once (`floor_http`: the proxy hop), and an ingress on the head
node that streams 1 or 8 items from a deployment on a worker through a handle, as coeflow's
ingress streams events from an expert replica (`floor_stream_1`, `floor_stream_8`). Prints one
JSON object: the median milliseconds of each, by mode.

    python scripts/ray_hops.py [--experts 3] [--repeats 30]"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from coeflow.bench.serve import build_coe


def timed(url: str, repeats: int) -> dict[str, float]:
    chat = {"model": "e0", "messages": [{"role": "user", "content": "select"}], "ignore_eos": True}
    calls = {"models": ("GET", "/models", None), "route": ("POST", "/route", {"prompt": "select x"}),
             "chat_1_token": ("POST", "/chat/completions", chat | {"max_tokens": 1}),
             "chat_8_tokens": ("POST", "/chat/completions", chat | {"max_tokens": 8})}
    out = {}
    with httpx.Client(timeout=60) as h:
        for name, (method, path, body) in calls.items():
            h.request(method, url + path, json=body)  # once untimed (first-call costs)
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                r = h.request(method, url + path, json=body)
                times.append(time.perf_counter() - t)
                assert r.status_code in (200, 404), r.text  # /route is a 404 without a router: still a hop
            out[name] = round(statistics.median(times) * 1e3, 2)
    return out


def floor_app():
    """Ray Serve alone: what any application placed as coeflow's is (its ingress on the head
    node, its replicas on workers) pays for the proxy hop and one streamed handle call."""
    from ray import serve
    from starlette.requests import Request

    from coeflow.cluster.mailbox import HEAD

    @serve.deployment(ray_actor_options={"num_cpus": 1.0})
    class Items:
        async def stream(self, n: int):
            for i in range(n):
                yield i

    @serve.deployment(ray_actor_options={"num_cpus": 0, "resources": {HEAD: 0.001}})
    class Front:
        def __init__(self, items):
            self.items = items

        async def __call__(self, request: Request) -> dict:
            n = int(request.query_params.get("n", "0"))
            got = [x async for x in self.items.options(stream=True).stream.remote(n)] if n else []
            return {"items": len(got)}

    return Front.bind(Items.bind())


def floor(url: str, repeats: int) -> dict[str, float]:
    out = {}
    with httpx.Client(timeout=60) as h:
        for name, n in (("floor_http", 0), ("floor_stream_1", 1), ("floor_stream_8", 8)):
            h.get(f"{url}?n={n}")
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                r = h.get(f"{url}?n={n}")
                times.append(time.perf_counter() - t)
                assert r.status_code == 200 and r.json()["items"] == n, r.text
            out[name] = round(statistics.median(times) * 1e3, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--experts", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    import torch
    from ray import serve

    from coeflow.cluster.deploy import APP, application, local_cluster, shutdown
    from coeflow.server import ServerOptions, build_server, serving
    opts = ServerOptions(fused=False, warm_up=False)
    # Ray's own messages go to stderr, so that the one JSON object is all of stdout
    with contextlib.redirect_stdout(sys.stderr), tempfile.TemporaryDirectory() as tmp:
        coe = build_coe(Path(tmp), args.experts)
        torch.set_num_threads(1)  # as a replica decodes
        srv = build_server(coe, opts)
        with serving(srv) as url:
            report = {"single": timed(url, args.repeats)}
        srv.store.close()
        with local_cluster(workers=2) as local:
            serve.run(application(coe, opts, 2, 1.0), name=APP, route_prefix="/")
            report["ray"] = timed(f"http://127.0.0.1:{local.port}/v1", args.repeats)
            shutdown()
            serve.run(floor_app(), name="floor", route_prefix="/floor")
            report["ray_serve_alone"] = floor(f"http://127.0.0.1:{local.port}/floor", args.repeats)
            serve.delete("floor")
    report["added_ms"] = {k: round(report["ray"][k] - report["single"][k], 2) for k in report["single"]}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
