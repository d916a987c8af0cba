"""One replica of the expert deployment: a whole coeflow core (store, scheduler, engines) for
the CoE, with this replica's own tier budgets. It takes jobs from the ingress and streams their
events back in batches (all the events ready since the last), and answers the mailbox."""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, AsyncIterator

import ray
from ray import serve

from coeflow.cluster.mailbox import mailbox
from coeflow.cluster.messages import Job, Report
from coeflow.errors import CoeflowError
from coeflow.scheduler import Failed, Finished, GenRequest
from coeflow.server.options import ServerOptions

log = logging.getLogger(__name__)

DRAIN_S = 5.0  # a replica told to stop serves its queued and running work this long, then fails it


class ExpertReplica:
    """The class behind the expert deployment. `experts_held`: how many experts Ray Serve's
    multiplexing takes this replica to hold at once (deploy.experts_per_replica)."""

    def __init__(self, coe_path: str, opts: ServerOptions, experts_held: int, threads: int | None = None) -> None:
        import torch

        from coeflow.server.build import build_server
        if threads:  # replicas sharing a node share its cores: each takes its own share, no more
            torch.set_num_threads(threads)
        self.srv = build_server(Path(coe_path), opts)
        if self.srv.warm_up:
            self.srv.scheduler.warm_up(self.srv.warm_up, wait=False)
        self.srv.scheduler.start()

        # Ray Serve's loader: it records which experts this replica was sent, so that requests
        # for them come here first. It loads nothing: the job's submission starts the expert's
        # prefetch, and its Started event says which tier it was found in.
        async def held(expert: str) -> str:  # a function: Ray keeps its cache as an attribute of it
            return expert
        self.expert = serve.multiplexed(max_num_models_per_replica=experts_held)(held)
        ctx = serve.get_replica_context()
        here = ray.get_runtime_context()
        self.replica, self.node, self.actor = ctx.replica_id.unique_id, here.get_node_id(), here.get_actor_name()
        self._mailbox_app = ctx.app_name
        self._closing = threading.Event()
        self._commands = ThreadPoolExecutor(4, thread_name_prefix="coeflow-mailbox")
        threading.Thread(target=self._answer_mailbox, name="coeflow-mailbox", daemon=True).start()

    async def generate(self, job: Job) -> AsyncIterator[list[tuple[int, Any]]]:
        """The job's events, (sequence index, event), in batches. A refusal (queue full,
        shutting down, too long for the KV cache) is the first sequence's Failed event; if the
        caller goes away, every sequence is cancelled."""
        await self.expert(job.expert)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def sink(index: int):
            return lambda ev: loop.call_soon_threadsafe(events.put_nowait, (index, ev))
        try:
            gens = [GenRequest(job.expert, s.prompt_ids, s.params, sink(i), constraint=self._constraint(job, s))
                    for i, s in enumerate(job.sequences)]
            self.srv.scheduler.submit_all(gens)
        except (CoeflowError, KeyError) as e:  # queue full, shutting down, too long for the KV cache
            yield [(0, Failed(e))]
            return
        left = len(gens)
        try:
            while left:
                batch = [await events.get()]
                while not events.empty():
                    batch.append(events.get_nowait())
                left -= sum(isinstance(ev, (Finished, Failed)) for _, ev in batch)
                yield [(i, _portable(ev)) for i, ev in batch]
        finally:
            for gen in gens:  # the caller went away (or all ended: a no-op)
                gen.cancelled.set()

    def _constraint(self, job: Job, seq: Any) -> Any:
        from coeflow.server.structured import GrammarConstraint
        return GrammarConstraint(self.srv.runtimes[job.expert], seq.grammar) if seq.grammar else None

    def reconfigure(self, config: dict) -> None:
        """Ray Serve's user_config, changed without restarting the replica: `max_queue`."""
        if "max_queue" in config:
            self.srv.scheduler.max_queue = int(config["max_queue"])

    # -- the mailbox ------------------------------------------------------------------------
    def _answer_mailbox(self) -> None:
        box = mailbox(self._mailbox_app)
        while not self._closing.is_set():
            try:
                command = ray.get(box.next.remote(self.replica))
            except ray.exceptions.RayError:  # the mailbox restarted or is gone: find it again
                if self._closing.wait(1.0):
                    return
                box = mailbox(self._mailbox_app)
                continue
            if command is not None:
                self._commands.submit(self._run_command, box, *command)

    def _run_command(self, box: Any, cid: int, command: str, args: tuple) -> None:
        try:
            result: Any = ("ok", getattr(self, f"_do_{command}")(*args))
        except CoeflowError as e:
            result = ("error", self.srv.health.public(str(e)))
        except Exception as e:  # noqa: BLE001  the ingress gets the reason, the replica goes on
            log.exception("mailbox command %s failed", command)
            result = ("error", f"{type(e).__name__}: {e}")
        box.answer.remote(cid, self.replica, result)

    def _do_status(self) -> Report:
        from coeflow.server.app import expert_rows
        srv = self.srv
        rows = expert_rows(srv)  # /v1/experts' rows, as one process gives them
        for row in rows:
            row["running"] = srv.scheduler.running(row["name"])
        return Report(self.replica, self.node, self.actor, rows, srv.scheduler.backend.kv_stats(),
                      dict(srv.scheduler.step_rows), srv.scheduler.warming_up)

    def _do_load(self, name: str, tier: str) -> None:
        self.srv.health.reload(name)
        self.srv.store.load(name, tier)

    def _do_unload(self, name: str, tier: str) -> None:
        self.srv.store.unload(name, tier)

    def _do_pin(self, name: str, pinned: bool) -> None:
        self.srv.store.pin(name, pinned)

    def _do_reconfigure(self, config: dict) -> None:
        """user_config applied at once on every replica (a Serve config's change needs a deploy)."""
        self.reconfigure(config)

    def __del__(self) -> None:
        """Ray Serve's graceful stop: queued and running work served for DRAIN_S, then failed."""
        closing = getattr(self, "_closing", None)
        if closing is None or closing.is_set():
            return
        closing.set()
        try:
            ray.get(mailbox(self._mailbox_app).leave.remote(self.replica), timeout=2.0)
        except Exception:  # noqa: BLE001  a mailbox already gone forgets the replica anyway
            pass
        self.srv.scheduler.stop(DRAIN_S)
        self.srv.store.close()


def _portable(event: Any) -> Any:
    """An event as it crosses to the ingress: a failure's exception is kept where it unpickles
    anywhere (Python's own, coeflow's), else becomes a RuntimeError saying what it was."""
    if isinstance(event, Failed) and type(event.error).__module__.split(".")[0] not in ("builtins", "coeflow"):
        return Failed(RuntimeError(f"{type(event.error).__name__}: {event.error}"))
    return event
