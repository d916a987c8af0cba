"""The CoE as a Ray Serve application: an ingress deployment (the HTTP app) in front of an
expert deployment (replicas of coeflow's core), and `serve_on_ray`, which runs it for
`coeflow serve --ray`. `build` is the application builder a Serve config file names
(`import_path: coeflow.cluster.deploy:build`, `args:` as its docstring says), for `serve deploy`."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Iterator

import ray
from ray import serve

from coeflow.cluster.front import ClusterStatus, RemoteScheduler
from coeflow.cluster import mailbox
from coeflow.cluster.mailbox import HEAD, NAMESPACE
from coeflow.cluster.replica import DRAIN_S, ExpertReplica
from coeflow.coefile import CoEFile, load_coe
from coeflow.model.checkpoint import checkpoint_files
from coeflow.scheduler import MAX_QUEUE
from coeflow.server.options import Limits, ServerOptions

log = logging.getLogger(__name__)

APP = "coeflow"  # the Serve application's name (the mailbox is named after it)
INGRESS_CONCURRENCY = 4096  # requests the ingress holds at once; each replica's own queue gives the 429s


def experts_per_replica(coe: CoEFile, host_mem: int | None) -> int:
    """Ray Serve's max_num_models_per_replica, from the replica's host budget: how many of the
    CoE's experts it holds at once, counting the largest first (bytes on disk, so a quantized or
    delta expert counts at its stored size)."""
    sizes = sorted((sum(f.stat().st_size for f in checkpoint_files(Path(s.path))) for s in coe.experts),
                   reverse=True)
    if host_mem is None:
        return len(sizes)
    held, used = 0, 0
    for size in sizes:
        if used + size > host_mem:
            break
        held, used = held + 1, used + size
    return max(1, held)


@serve.ingress()
class Ingress:
    """coeflow's HTTP app, its scheduler and store the cluster's faces (coeflow.cluster.front)."""

    def __init__(self, experts: Any, coe_path: str, opts: ServerOptions) -> None:
        from coeflow.server.build import build_ingress
        status = ClusterStatus(serve.get_replica_context().app_name, list(load_coe(coe_path).expert_names))
        scheduler = RemoteScheduler(experts, status)
        self.srv = build_ingress(coe_path, opts, scheduler, status)
        scheduler.on_resend = lambda expert: self.srv.metrics.resent.labels(expert).inc()

    def __serve_build_asgi_app__(self) -> Any:
        from coeflow.server.app import create_app
        return create_app(self.srv)

    def __del__(self) -> None:
        srv = getattr(self, "srv", None)
        if srv is not None:
            srv.scheduler.stop()


def application(coe_path: str | Path, opts: ServerOptions, replicas: int = 2, replica_cpus: float = 1.0,
                threads: int | None = None) -> Any:
    """The Serve application: `replicas` expert replicas of `replica_cpus` CPUs each (their
    torch threads: `threads`, else as many as the CPUs), each with `opts`' tier budgets."""
    coe_path = str(Path(coe_path).resolve())
    per_replica = experts_per_replica(load_coe(coe_path), opts.host_mem)
    # The queue limit reaches the replicas as user_config alone, so that changing it in a Serve
    # config (serve deploy) reconfigures them instead of restarting them.
    max_queue, opts = opts.max_queue, dataclasses.replace(opts, max_queue=MAX_QUEUE)
    experts = serve.deployment(
        ExpertReplica, name="Experts", num_replicas=replicas, ray_actor_options={"num_cpus": replica_cpus},
        max_ongoing_requests=max(max_queue, MAX_QUEUE) + opts.max_batch, user_config={"max_queue": max_queue},
        graceful_shutdown_timeout_s=DRAIN_S + 5)
    # The ingress, like Serve's HTTP proxy (HEAD_ONLY), lives on the head node, whose loss takes
    # the cluster down anyway: no worker's loss takes the endpoint with it.
    ingress = serve.deployment(Ingress, name="Ingress", num_replicas=1,
                               ray_actor_options={"num_cpus": 0, "resources": {HEAD: 0.001}},
                               max_ongoing_requests=INGRESS_CONCURRENCY)
    threads = threads or max(1, int(replica_cpus))
    return ingress.bind(experts.bind(coe_path, opts, per_replica, threads), coe_path, opts)


def build(args: dict[str, Any]) -> Any:
    """The builder for a Serve config file. `args`: `coe` (the CoE file), and optionally
    `replicas`, `replica_cpus`, `threads`, and any of ServerOptions' fields (`host_mem`,
    `device_mem`, `kv_mem` in bytes or as "64GB"; `max_batch`, `max_queue`, `api_key`, ...;
    `limits` as a mapping)."""
    from coeflow.store import parse_bytes
    args = dict(args)
    for key in ("device_mem", "host_mem", "kv_mem"):
        if isinstance(args.get(key), str):
            args[key] = parse_bytes(args[key])
    coe = args.pop("coe")
    placement = {k: args.pop(k) for k in ("replicas", "replica_cpus", "threads") if k in args}
    if "limits" in args:
        args["limits"] = Limits(**args["limits"])
    return application(coe, ServerOptions(**args), **placement)


def serve_on_ray(coe_path: str | Path, opts: ServerOptions, address: str | None, host: str, port: int,
                 replicas: int, replica_cpus: float) -> None:
    """Join the Ray cluster at `address` (None: start one on this machine), deploy, and serve
    until interrupted; then the application is deleted and its mailbox with it."""
    ray.init(address=address, namespace=NAMESPACE, logging_level=logging.WARNING)
    serve.start(http_options={"host": host, "port": port}, proxy_location="HeadOnly")
    serve.run(application(coe_path, opts, replicas, replica_cpus), name=APP, route_prefix="/")
    log.info("serving %s on Ray at http://%s:%d/v1 (%d expert replicas)", coe_path, host, port, replicas)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        shutdown()


@dataclasses.dataclass
class LocalCluster:
    port: int  # Serve's HTTP proxy
    dashboard: str  # the head's dashboard, where `serve deploy --address` sends a config
    cluster: Any  # ray.cluster_utils.Cluster: its worker_nodes can be removed, as a machine lost


@contextlib.contextmanager
def local_cluster(workers: int, worker_cpus: int = 1) -> Iterator[LocalCluster]:
    """A Ray cluster of a head and `workers` worker nodes on this machine (Ray's cluster_utils,
    as for tests and benchmarks), with Serve's HTTP proxy started on a free port; takes
    everything down at the end. The head has no CPU to give: expert replicas run on workers
    only, as they would beside a head that keeps the cluster's own services. Its dashboard
    takes Serve config files (`serve deploy --address`)."""
    from ray.cluster_utils import Cluster

    from coeflow.server import free_port
    dashboard = free_port()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": dashboard})
    try:
        for _ in range(workers):
            cluster.add_node(num_cpus=worker_cpus)
        ray.init(address=cluster.address, namespace=NAMESPACE, logging_level=logging.WARNING, log_to_driver=False)
        cluster.wait_for_nodes()
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
        try:
            yield LocalCluster(port, f"http://127.0.0.1:{dashboard}", cluster)
        finally:
            serve.shutdown()
    finally:
        ray.shutdown()
        cluster.shutdown()


def shutdown(app: str = APP) -> None:
    """Delete the application and its mailbox (the cluster itself stays up)."""
    serve.delete(app)
    try:
        ray.kill(ray.get_actor(mailbox.name(app), namespace=NAMESPACE))
    except ValueError:
        pass


__all__ = ["APP", "application", "build", "serve_on_ray", "shutdown", "experts_per_replica"]
