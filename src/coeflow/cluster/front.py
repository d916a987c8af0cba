"""What the ingress sees of the expert replicas, in the shapes the HTTP app already speaks:
`RemoteScheduler` (the scheduler's face: submit, counts, clock) sends each request's sequences
to the expert deployment and relays their events to the request's sinks; `ClusterStatus` (the
store's face: status, failures, admin actions) asks every replica through the mailbox."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections import Counter
from typing import Any, Callable

import ray

from coeflow.backend.interface import WallClock
from coeflow.cluster.mailbox import mailbox
from coeflow.cluster.messages import Job, Report, Sequence
from coeflow.errors import CoeflowError
from coeflow.model import parse_dtype
from coeflow.scheduler import Failed, Finished, GenRequest, ShuttingDownError, Started
from coeflow.store.store import ExpertStatus

log = logging.getLogger(__name__)

RETRIES = 3  # a job whose replica died before any of its sequences started is sent again this often
RETRY_S = 0.5  # ... after waiting this long (Ray Serve notices the dead replica meanwhile)
STATUS_S = 1.0  # the cached status is refreshed this often in the background


# What a call to a replica raises when the replica died or cannot be reached (its node gone)
LOST = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)


class ReplicaLost(CoeflowError):
    """The replica running a request's sequences died after they started (the stream ends with
    this error; a request not yet started is sent to another replica instead)."""


@dataclasses.dataclass
class ClusterExpertStatus(ExpertStatus):
    """An expert's status over the cluster: its best tier, summed counts, and where it is."""
    replicas: list[dict] = dataclasses.field(default_factory=list)  # {replica, node, actor, tier}


class ClusterStatus:
    """The store's face: the replicas' reports, merged. Failures and tiers are read from a
    cache refreshed every STATUS_S (a request's routing never waits on the cluster); status()
    and the admin actions ask the replicas now."""

    TIERS = ("device", "host", "loading", "disk", "failed")  # best first

    def __init__(self, app: str, experts: list[str]) -> None:
        self.app, self.experts = app, experts
        self.mailbox = mailbox(app)
        self.reports: dict[str, Report] = {}
        self._by_expert: dict[str, list[tuple[Report, dict]]] = {}  # the reports' rows, by expert
        self._lock = threading.Lock()
        self._closing = threading.Event()
        threading.Thread(target=self._refresh_loop, name="coeflow-cluster-status", daemon=True).start()

    def _ask_all(self, command: str, args: tuple, timeout_s: float) -> dict[str, Any]:
        try:
            return ray.get(self.mailbox.ask_all.remote(command, args, timeout_s))
        except LOST:  # the mailbox itself was lost: find or make it again
            self.mailbox = mailbox(self.app)
            return ray.get(self.mailbox.ask_all.remote(command, args, timeout_s))

    def refresh(self) -> dict[str, Report]:
        answers = self._ask_all("status", (), 5.0)
        reports = {r: rep for r, (kind, rep) in answers.items() if kind == "ok"}
        by_expert: dict[str, list[tuple[Report, dict]]] = {}
        for rep in reports.values():
            for row in rep.experts:
                by_expert.setdefault(row["name"], []).append((rep, row))
        with self._lock:
            self.reports, self._by_expert = reports, by_expert
        return reports

    def _refresh_loop(self) -> None:
        while not self._closing.wait(STATUS_S):
            try:
                self.refresh()
            except ray.exceptions.RayError as e:
                log.warning("cluster status: %s", e)

    def _rows(self, name: str) -> list[tuple[Report, dict]]:
        """Each replica's row for `name` (read on every request: an index, not a scan)."""
        with self._lock:
            return self._by_expert.get(name, [])

    # -- what the HTTP app and ExpertHealth ask -----------------------------------------------
    def status(self) -> list[ClusterExpertStatus]:
        self.refresh()
        out = []
        for name in self.experts:
            rows = self._rows(name)
            if not rows:
                continue
            best = min((row for _, row in rows), key=lambda r: self.TIERS.index(r["tier"]))
            out.append(ClusterExpertStatus(
                name, best["tier"], best["bytes"], sum(r["hits"] for _, r in rows), sum(r["misses"] for _, r in rows),
                max((r["last_used"] for _, r in rows if r["last_used"] is not None), default=None),
                any(r["pinned"] for _, r in rows), best["priority"], best["error"],
                [s for _, r in rows for s in r["recent_switches"]], sum(r["leases"] for _, r in rows), best["base"],
                [{"replica": rep.replica, "node": rep.node, "actor": rep.actor, "tier": r["tier"]} for rep, r in rows]))
        return out

    def failure(self, name: str) -> str | None:
        """Why `name` cannot serve: its error on every replica that reports it (one replica's
        failure leaves the others serving it)."""
        errors = [row["error"] for _, row in self._rows(name)]
        return errors[0] if errors and all(errors) else None

    def tier_of(self, name: str) -> str:
        rows = self._rows(name)
        return min((r["tier"] for _, r in rows), key=self.TIERS.index) if rows else "disk"

    def row(self, name: str, key: str) -> Any:
        rows = self._rows(name)
        return rows[0][1][key] if rows else None

    def load(self, name: str, tier: str = "device") -> None:
        self._everywhere("load", (name, tier), timeout_s=600.0)

    def unload(self, name: str, tier: str = "host") -> None:
        self._everywhere("unload", (name, tier))

    def pin(self, name: str, pinned: bool = True) -> None:
        self._everywhere("pin", (name, pinned))

    def _everywhere(self, command: str, args: tuple, timeout_s: float = 60.0) -> None:
        """An admin action on every replica; CoeflowError with the first replica's reason if any refused."""
        answers = self._ask_all(command, args, timeout_s)
        if not answers:
            raise CoeflowError("no expert replica answered; is the expert deployment running?")
        errors = [value for kind, value in answers.values() if kind == "error"]
        if errors:
            raise CoeflowError(errors[0])
        self.refresh()

    def close(self) -> None:
        self._closing.set()

    # -- the backend's face (metrics, /v1/experts) -------------------------------------------
    def serving_dtype(self, name: str) -> Any:
        dtype = self.row(name, "dtype")
        return parse_dtype(dtype) if dtype else None

    def quantization(self, name: str) -> str | None:
        return self.row(name, "quantization")

    def kv_stats(self) -> dict[str, dict[str, int]]:
        """Every replica's KV caches now, summed by shape (step_rows then reads the same reports)."""
        total: dict[str, Counter] = {}
        for rep in self.refresh().values():
            for key, stats in rep.kv_stats.items():
                total.setdefault(key, Counter()).update(stats)
        return {k: dict(v) for k, v in total.items()}

    def warming_up(self) -> bool:
        with self._lock:
            return any(rep.warming_up for rep in self.reports.values())

    def step_rows(self) -> dict[int, int]:
        total: Counter = Counter()
        with self._lock:
            for rep in self.reports.values():
                total.update(rep.step_rows)
        return dict(total)


class _Cancel(threading.Event):
    """A sequence's `cancelled` flag that also calls `on_set` (which stops its remote job)."""

    def __init__(self, on_set: Callable[[], None]) -> None:
        super().__init__()
        self._on_set = on_set

    def set(self) -> None:
        super().set()
        self._on_set()


class RemoteScheduler:
    """The scheduler's face: a request's sequences go to the expert deployment as one job
    (multiplexed by expert, so to a replica that holds it), their events come back to their
    sinks. Queue limits, 429s and batching are each replica's own; counts here are what the
    ingress has sent and not yet seen end."""

    def __init__(self, handle: Any, status: ClusterStatus) -> None:
        self.handle, self.status = handle, status
        self.backend = status
        self.clock = WallClock()
        self._queued: Counter = Counter()
        self._running: Counter = Counter()
        self._stopping = False
        self.on_resend: Callable[[str], None] = lambda expert: None  # a job sent again (the ingress counts them)

    @property
    def step_rows(self) -> dict[int, int]:
        return self.status.step_rows()

    @property
    def warming_up(self) -> bool:
        return self.status.warming_up()

    @property
    def draining(self) -> bool:
        return self._stopping

    def queued(self, expert: str | None = None) -> int:
        return self._queued[expert] if expert is not None else sum(self._queued.values())

    def running(self, expert: str | None = None) -> int:
        return self._running[expert] if expert is not None else sum(self._running.values())

    def submit_all(self, reqs: list[GenRequest]) -> None:
        """Send the sequences (on the event loop, whose task then relays their events)."""
        if self._stopping:
            raise ShuttingDownError("the server is shutting down")
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._relay(reqs))

        def stop() -> None:
            if all(r.cancelled.is_set() for r in reqs):
                loop.call_soon_threadsafe(task.cancel)
        for r in reqs:
            r.cancelled = _Cancel(stop)
        self._queued[reqs[0].expert] += len(reqs)

    async def _relay(self, reqs: list[GenRequest]) -> None:
        """Send the job and relay its events. A job whose replica is lost before any sequence
        started is sent again (Ray Serve picks a live replica); lost later, or failing any other
        way, each sequence not yet ended ends with the reason."""
        expert = reqs[0].expert
        job = Job(expert, [Sequence(r.prompt_ids, r.params, getattr(r.constraint, "grammar", None)) for r in reqs])
        started: set[int] = set()
        ended: set[int] = set()

        def end_all(error: Exception) -> None:
            for i, r in enumerate(reqs):
                if i not in ended:
                    self._count(expert, i, Failed(error), started, ended)
                    r.sink(Failed(error))
        try:
            for attempt in range(RETRIES + 1):
                stream = self.handle.options(multiplexed_model_id=expert, stream=True).generate.remote(job)
                try:
                    async for batch in stream:
                        for i, ev in batch:
                            self._count(expert, i, ev, started, ended)
                            reqs[i].sink(ev)
                    end_all(RuntimeError("the expert replica ended the job without an answer"))  # none left: a no-op
                    return
                except asyncio.CancelledError:  # every sequence was cancelled: so is the replica's job
                    stream.cancel()
                    raise
                except LOST as e:
                    if started or attempt == RETRIES:
                        end_all(ReplicaLost(f"the expert replica serving {expert!r} was lost ({type(e).__name__})"))
                        return
                    log.warning("a job for %s lost its replica before it started (%s); sending it again", expert, e)
                    self.on_resend(expert)
                    await asyncio.sleep(RETRY_S)
                except Exception as e:  # noqa: BLE001  the replica's own failure, not its loss: not sent again
                    end_all(RuntimeError(f"the expert replica failed: {type(e).__name__}: {e}"))
                    return
        finally:  # cancelled sequences end here, in the counts
            for i in range(len(reqs)):
                self._count(expert, i, Finished("cancelled", 0), started, ended)

    def _count(self, expert: str, i: int, ev: Any, started: set[int], ended: set[int]) -> None:
        if isinstance(ev, Started) and i not in started:
            started.add(i)
            self._queued[expert] -= 1
            self._running[expert] += 1
        elif isinstance(ev, (Finished, Failed)) and i not in ended:
            ended.add(i)
            if i in started:
                self._running[expert] -= 1
            else:
                self._queued[expert] -= 1

    def start(self) -> None:
        """Nothing to start here: the replicas run their own schedulers."""

    def stop(self, drain_s: float = 5.0) -> None:
        self._stopping = True
        self.status.close()
