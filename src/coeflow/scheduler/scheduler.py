"""Per-expert queues in front of the engines, and the one worker thread that runs them.

Which expert runs next: the expert whose oldest request has waited longest *among experts
already resident* (no switch stalls the batch), unless some request has waited past
`max_wait_s`: then its expert runs next even if it must be loaded first. So resident experts
keep serving while others load, and no request waits unboundedly whatever the traffic skew.
Every request's expert is prefetched the moment it is queued, so its load overlaps with
other experts' compute. The decisions themselves are pure functions (decisions.py), shared
with the modelled backend's replay (coeflow.sim.replay). Batches run on the backend
(`run_batch`) and time comes from its clock: nothing here knows of PyTorch or wall time."""

from __future__ import annotations

import logging
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol

from coeflow.errors import CoeflowError
from coeflow.scheduler.decisions import DISTANCE, pick_expert, prefetch_tier, take_batch

if TYPE_CHECKING:
    from coeflow.backend.interface import Backend
    from coeflow.engine import Delta, SamplingParams

log = logging.getLogger(__name__)

# Defaults of the server's scheduling, read by ServerOptions and `coeflow serve --help`.
MAX_BATCH = 8  # requests of one expert decoded together
MAX_QUEUE = 256  # requests waiting before new ones are refused (HTTP 429)
MAX_WAIT_S = 10.0  # a request waiting longer runs next, even if its expert must load first


class QueueFullError(CoeflowError):
    """The scheduler holds its maximum number of waiting requests (HTTP 429)."""


class ShuttingDownError(CoeflowError):
    """The server is stopping and takes no new work (HTTP 503)."""


class SequenceFailed(Exception):
    """One request's generation failed on its own (its batch went on); the message says why."""


@dataclass
class Started:
    expert: str
    source_tier: str
    switch_s: float
    queued_s: float


@dataclass
class Finished:
    reason: str
    completion_tokens: int


@dataclass
class Failed:
    error: Exception


Event = Any  # Started | engine.Delta | Finished | Failed


@dataclass
class GenRequest:
    """One sequence to generate. `sink` receives its events on the worker thread, in order:
    Started, Delta..., then Finished (or a single Failed)."""
    expert: str
    prompt_ids: list[int]
    params: "SamplingParams"
    sink: Callable[[Event], None]
    arrival: float | None = None  # on the backend's clock; None: when submitted
    cancelled: threading.Event = field(default_factory=threading.Event)
    arrival_tier: str = "?"  # where its expert was when it arrived (set by submit)

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def gen_tokens(self) -> int:
        return self.params.max_tokens


class Store(Protocol):
    def prefetch(self, name: str, tier: str = "device") -> Future: ...
    def acquire(self, name: str, timeout: float | None = None): ...
    def tier_of(self, name: str) -> str: ...


class Scheduler:
    """`experts`: the names it queues for; the store leases their weights and the backend
    runs their batches (the real one needs a runtime per expert: backend.runtimes)."""

    def __init__(self, store: Store, backend: "Backend", experts: Iterable[str], *, max_batch: int = MAX_BATCH,
                 max_queue: int = MAX_QUEUE, max_wait_s: float = MAX_WAIT_S, warm_lengths: tuple[int, ...] = (4,),
                 on_batch: Callable[[str, list[GenRequest], object], None] | None = None):
        self.store, self.backend, self.clock = store, backend, backend.clock
        self.max_batch, self.max_queue, self.max_wait_s = max_batch, max_queue, max_wait_s
        self.warm_lengths = warm_lengths  # prompt + output tokens of the requests warm_up runs
        self.on_batch = on_batch
        self._queues: dict[str, deque[GenRequest]] = {name: deque() for name in experts}
        self._loads: dict[str, Future] = {}
        self._ready_at: dict[str, float] = {}  # when each expert's latest prefetch finished
        self._prefetch_to = prefetch_tier(backend.device_copies)
        self._cond = threading.Condition()
        self._stopping = False
        self._running: list[GenRequest] = []  # the batch on the worker now
        self._cut: set[int] = set()  # ids of running requests the shutdown's deadline stopped
        self._thread = threading.Thread(target=self._loop, name="coeflow-scheduler", daemon=True)

    # -- API used by the server ---------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, req: GenRequest) -> None:
        self.submit_all([req])

    def submit_all(self, reqs: list[GenRequest]) -> None:
        """Queue requests together (one batch if they fit): all are accepted, or none."""
        unknown = sorted({r.expert for r in reqs} - self._queues.keys())
        if unknown:
            raise KeyError(f"no queue for expert(s) {', '.join(unknown)}")
        with self._cond:
            if self._stopping:
                raise ShuttingDownError("the server is shutting down")
            if self.queued() + len(reqs) > self.max_queue:
                raise QueueFullError(f"the request queue is full ({self.max_queue} waiting); retry later")
            for req in reqs:
                if req.arrival is None:
                    req.arrival = self.clock.now()
                req.arrival_tier = self.store.tier_of(req.expert)
                self._queues[req.expert].append(req)
                self._prefetch(req.expert)
            self._cond.notify_all()

    def queued(self, expert: str | None = None) -> int:
        if expert is not None:
            return len(self._queues[expert])
        return sum(len(q) for q in self._queues.values())

    def stop(self, drain_s: float = 5.0) -> None:
        """Take no new requests; serve what is queued and running for up to `drain_s`, then fail
        the rest: every request gets its answer or an error, none is dropped."""
        deadline = self.clock.now() + drain_s
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            while (self.queued() or self._running) and self.clock.now() < deadline:
                self._cond.wait(0.05)
            for q in self._queues.values():
                while q:
                    q.popleft().sink(Failed(ShuttingDownError("the server shut down before this request ran")))
            for r in self._running:  # they end at their next step, with an error (see _run)
                self._cut.add(id(r))
                r.cancelled.set()
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=max(drain_s, 1.0))

    def warm_up(self, experts: list[str]) -> None:
        """Run each expert at every batch size up to max_batch and every length in
        `warm_lengths`, before traffic: the decode step compiles on first use of each (shape,
        batch, cache length) bucket, and no user should wait for the compiler. Skipped, with
        a warning, when the queue is too full to take a warm-up batch."""
        from coeflow.engine import SamplingParams
        params = SamplingParams(max_tokens=2, ignore_eos=True)
        for name in experts:
            for length in self.warm_lengths:
                for size in range(1, self.max_batch + 1):
                    left = threading.Semaphore(0)

                    def done(ev: Event, left: threading.Semaphore = left) -> None:
                        if isinstance(ev, (Finished, Failed)):
                            left.release()
                    try:
                        self.submit_all([GenRequest(name, [0] * max(1, length - 2), params, done)
                                         for _ in range(size)])
                    except (QueueFullError, ShuttingDownError) as e:
                        log.warning("warm-up of %s stopped: %s", name, e)
                        return
                    for _ in range(size):
                        left.acquire()

    # -- worker ---------------------------------------------------------------------------
    def _prefetch(self, expert: str) -> None:
        fut = self._loads.get(expert)
        if fut is None or fut.done():
            fut = self.store.prefetch(expert, self._prefetch_to)
            self._loads[expert] = fut
            fut.add_done_callback(lambda _: self._loaded(expert))

    def _loaded(self, expert: str) -> None:
        with self._cond:
            self._ready_at[expert] = self.clock.now()
            self._cond.notify_all()

    def _pick(self) -> str | None:
        heads = [(q[0].arrival, name, name not in self._loads or self._loads[name].done())
                 for name, q in self._queues.items() if q]
        return pick_expert(heads, self.clock.now(), self.max_wait_s, self._stopping)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping and not self.queued():
                        return
                    expert = self._pick()
                    if expert is not None:
                        break
                    self._cond.wait(0.05)
                batch = take_batch(self._queues[expert], self.max_batch, lambda r: r.cancelled.is_set())
                self._cond.notify_all()
            if batch:
                self._run(expert, batch)

    def _started(self, r: GenRequest, lease, t0: float) -> Started:
        """What the request saw: the farther of the tier its expert was in when it arrived and
        the tier the batch's acquire found it in, and the whole switch that kept it waiting
        (the part its prefetch did before the batch, plus the acquire's)."""
        src = lease.source_tier
        waited = lease.switch_s
        if DISTANCE.get(r.arrival_tier, -1) > DISTANCE.get(src, 0):
            src = r.arrival_tier
            waited += max(0.0, self._ready_at.get(r.expert, r.arrival) - r.arrival)
        return Started(r.expert, src, waited, t0 - r.arrival)

    def _run(self, expert: str, batch: list[GenRequest]) -> None:
        with self._cond:
            self._running = batch
        try:
            self._run_batch(expert, batch)
        finally:
            with self._cond:
                self._running = []
                self._cond.notify_all()

    def _end(self, r: GenRequest, d: "Delta | None") -> Event:
        """A request's last event, once its batch is over."""
        if id(r) in self._cut and (d is None or d.finish_reason in (None, "cancelled")):
            return Failed(ShuttingDownError("the server shut down while this request ran"))
        if d is not None and d.finish_reason == "error":
            return Failed(SequenceFailed(d.error))
        return Finished(d.finish_reason if d and d.finish_reason else "cancelled", d.completion_tokens if d else 0)

    def _run_batch(self, expert: str, batch: list[GenRequest]) -> None:
        t0 = self.clock.now()
        try:
            lease = self.store.acquire(expert)
        except Exception as e:  # a failed expert fails its own requests only
            for r in batch:
                r.sink(Failed(e))
            return
        last: list[Delta | None] = [None] * len(batch)
        ended = [False] * len(batch)

        def on_token(d: Delta) -> None:
            last[d.index] = d
            if d.finish_reason == "error":  # a failed sequence gets Failed, below, and nothing else
                return
            batch[d.index].sink(d)
            if d.finish_reason is not None:  # its answer is whole now, whatever its batch mates do
                ended[d.index] = True
                batch[d.index].sink(self._end(batch[d.index], d))
        try:
            with lease:
                for r in batch:
                    r.sink(self._started(r, lease, t0))
                self.backend.run_batch(expert, lease, batch, on_token)
                for r, d, done in zip(batch, last, ended):
                    if not done:
                        r.sink(self._end(r, d))
                if self.on_batch:
                    self.on_batch(expert, batch, lease)
        except Exception as e:
            log.exception("generation failed on expert %s", expert)
            for r, done in zip(batch, ended):
                if not done:
                    r.sink(Failed(e))
