"""Per-expert queues in front of the engines, and the one worker thread that steps them.

Continuous batching across experts (the default schedule). Between any two steps the worker
admits queued requests into the running batch of the expert on the device (as the KV cache
has room), retires finished and cancelled ones at once, and may give the device to another
expert: `decisions.next_expert` weighs how long each expert's work has waited, how many
requests it has, and whether its weights are ready (a switch to a ready expert is an attach:
a pointer swap on a CPU, a slot already filled on a GPU). Each expert's running sequences
keep their keys in the KV cache while another expert runs. A step prefills at most
`prefill_chunk` prompt tokens, so a long prompt never stalls the others for more than one
chunk. `schedule="static"` is run-to-completion batching, kept for the benchmark's
comparison. Every request's expert is prefetched the moment it is queued, so its load
overlaps other experts' steps. The decisions are pure functions (decisions.py); batches run
on the backend (`backend.batch(expert)`, an ExpertBatch) and time comes from its clock:
nothing here knows of PyTorch or wall time."""

from __future__ import annotations

import logging
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol

from coeflow.errors import CoeflowError
from coeflow.scheduler.decisions import (SCHEDULES, ExpertWork, admit, next_expert, next_expert_static,
                                         prefetch_tier, reported_switch, waiting_since)

if TYPE_CHECKING:
    from coeflow.backend.interface import ServingBackend
    from coeflow.engine import Delta, SamplingParams

log = logging.getLogger(__name__)

# Defaults of the server's scheduling, read by ServerOptions and `coeflow serve --help`.
MAX_BATCH = 8  # sequences of one expert decoded together
MAX_QUEUE = 256  # requests waiting before new ones are refused (HTTP 429)
MAX_WAIT_S = 10.0  # work waiting longer gets the device next, even if its expert must load first
SLICE_S = 0.05  # the device stays with an expert at least this long once others wait
PREFILL_CHUNK = 256  # prompt tokens prefilled in one step, at most


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


@dataclass(eq=False)  # a request is itself: two alike are still two
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
    last: Any = None  # its latest Delta (set by the worker)
    constraint: Any = None  # what its output must match (engine.sampling.Constraint), if anything

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

    def __init__(self, store: Store, backend: "ServingBackend", experts: Iterable[str], *, max_batch: int = MAX_BATCH,
                 max_queue: int = MAX_QUEUE, max_wait_s: float = MAX_WAIT_S, slice_s: float = SLICE_S,
                 prefill_chunk: int = PREFILL_CHUNK, schedule: str = "continuous"):
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, not {schedule!r}")
        self.store, self.backend, self.clock = store, backend, backend.clock
        self.max_batch, self.max_queue, self.max_wait_s = max_batch, max_queue, max_wait_s
        self.slice_s, self.prefill_chunk, self.static = slice_s, max(1, prefill_chunk), schedule == "static"
        self._queues: dict[str, deque[GenRequest]] = {name: deque() for name in experts}
        self._live: dict[str, list[GenRequest]] = {name: [] for name in self._queues}
        self._stepped: dict[str, float] = {}  # when each expert's running sequences last stepped
        self._loads: dict[str, Future] = {}
        self._ready_at: dict[str, float] = {}  # when each expert's latest prefetch finished
        self._prefetch_to = prefetch_tier(backend.device_copies)
        self._cond = threading.Condition()
        self._jobs: deque[Callable[[], None]] = deque()  # run by the worker between two steps (warm-up)
        self._warming: list[threading.Event] = []  # warm-ups not finished yet
        self._stopping = False
        self._cut: set[int] = set()  # ids of running requests the shutdown's deadline stopped
        self.step_rows: dict[int, int] = {}  # steps run, by the sequences in the batch
        self._thread = threading.Thread(target=self._loop, name="coeflow-scheduler", daemon=True)

    # -- API used by the server ---------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, req: GenRequest) -> None:
        self.submit_all([req])

    def submit_all(self, reqs: list[GenRequest]) -> None:
        """Queue requests together (one batch if they fit): all are accepted, or none. A
        request its expert can never run (longer than its KV cache) is refused here
        (InvalidRequestError), not after it waited."""
        unknown = sorted({r.expert for r in reqs} - self._queues.keys())
        if unknown:
            raise KeyError(f"no queue for expert(s) {', '.join(unknown)}")
        for req in reqs:
            self.backend.batch(req.expert).check(req)
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

    def running(self, expert: str | None = None) -> int:
        """Requests admitted into a batch and not yet finished."""
        if expert is not None:
            return len(self._live[expert])
        return sum(len(v) for v in self._live.values())

    def stop(self, drain_s: float = 5.0) -> None:
        """Take no new requests; serve what is queued and running for up to `drain_s`, then fail
        the rest: every request gets its answer or an error, none is dropped."""
        deadline = self.clock.now() + drain_s
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            while (self.queued() or self.running()) and self.clock.now() < deadline:
                self._cond.wait(0.05)
            for q in self._queues.values():
                while q:
                    q.popleft().sink(Failed(ShuttingDownError("the server shut down before this request ran")))
            for live in self._live.values():  # they end at their next step, with an error
                for r in live:
                    self._cut.add(id(r))
                    r.cancelled.set()
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=max(drain_s, 1.0))

    def warm_up(self, experts: list[str], wait: bool = True) -> None:
        """Before traffic: on the worker (the only thread that runs the engines), prepare every
        decode step shape a batch of up to max_batch can take on each expert's engine (the
        step compiles on first use of a shape, and no user should wait for the compiler).
        The worker does this before any request; requests that arrive meanwhile queue. With
        `wait`, returns when done. An expert that cannot be loaded is skipped with a warning
        (its requests will say why)."""
        done = threading.Event()
        with self._cond:
            self._warming.append(done)
            self._jobs.append(lambda: self._warm(experts, done))
            self._cond.notify_all()
        while wait and not done.wait(0.1):
            if not self._thread.is_alive():
                return

    @property
    def warming_up(self) -> bool:
        """A warm-up has not finished: requests are accepted but queue behind it."""
        return not all(done.is_set() for done in self._warming)

    @property
    def draining(self) -> bool:
        """Stopping: the queued and running requests are served, new ones refused."""
        return self._stopping

    def _warm(self, experts: list[str], done: threading.Event) -> None:
        t0 = self.clock.now()
        try:
            for name in experts:
                try:
                    with self.store.acquire(name) as lease:
                        n = self.backend.batch(name).warm(lease, self.max_batch)
                    log.info("warm-up: %d decode step shapes ready for %s", n, name)
                except Exception as e:  # noqa: BLE001  its own requests will fail with the reason
                    log.warning("warm-up of %s failed: %s", name, e)
        finally:
            done.set()
            log.info("warm-up finished in %.1f s: serving", self.clock.now() - t0)

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

    def _work(self) -> list[ExpertWork]:
        out = []
        for name, q in self._queues.items():
            live = self._live[name]
            if not q and not live:
                continue
            since = waiting_since(q[0].arrival if q else None, self._stepped.get(name), self.clock.now(), self.static)
            ready = name not in self._loads or self._loads[name].done()
            admissible = bool(q) and (len(live) < self.max_batch) and (not self.static or not live) \
                and self.backend.batch(name).fits(q[0])
            out.append(ExpertWork(name, since, len(q), len(live), ready, admissible))
        return out

    def _choose(self, current: str | None, held_s: float) -> str | None:
        """Called with the lock held."""
        if self.static:
            return next_expert_static(self._work(), current, self.clock.now(), max_wait_s=self.max_wait_s,
                                      draining=self._stopping)
        return next_expert(self._work(), current, held_s, self.clock.now(), slice_s=self.slice_s,
                           max_wait_s=self.max_wait_s, draining=self._stopping)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    job = self._jobs.popleft() if self._jobs else None
                    if job is not None:
                        break
                    if self._stopping and not self.queued() and not self.running():
                        return
                    expert = self._choose(None, 0.0)
                    if expert is not None:
                        break
                    self._cond.wait(0.05)
            if job is not None:
                job()
                continue
            while expert is not None:
                expert = self._serve(expert)

    def _started(self, r: GenRequest, source: str, switch_s: float, t0: float) -> Started:
        """What the request saw: the farther of the tier its expert was in when it arrived and
        the tier the acquire found it in, and the whole switch that kept it waiting (the part
        its prefetch did before the acquire, plus the acquire's)."""
        prefetched = max(0.0, self._ready_at.get(r.expert, r.arrival) - r.arrival)
        source, waited = reported_switch(r.arrival_tier, source, switch_s, prefetched)
        return Started(r.expert, source, waited, t0 - r.arrival)

    def _end(self, r: GenRequest) -> Event:
        """A request's last event."""
        d = r.last
        if id(r) in self._cut and (d is None or d.finish_reason in (None, "cancelled")):
            return Failed(ShuttingDownError("the server shut down while this request ran"))
        if d is not None and d.finish_reason == "error":
            return Failed(SequenceFailed(d.error))
        return Finished(d.finish_reason if d and d.finish_reason else "cancelled", d.completion_tokens if d else 0)

    def _serve(self, expert: str) -> str | None:
        """Step `expert`'s batch until the decisions give the device to another expert (which
        is returned) or nothing is left to run (None)."""
        t0 = self.clock.now()
        try:
            lease = self.store.acquire(expert)
        except Exception as e:  # a failed expert fails its own requests only
            with self._cond:
                doomed = list(self._queues[expert]) + self._live[expert]
                self._queues[expert].clear()
                self._live[expert] = []
                self._cond.notify_all()
            for r in doomed:
                self.backend.batch(expert).leave(r)
                r.sink(Failed(e))
            return None
        batch = self.backend.batch(expert)
        source, switch_s = lease.source_tier, lease.switch_s
        nxt: str | None = expert
        with lease:
            try:
                while nxt == expert:
                    with self._cond:
                        gone = self._drop_cancelled()
                        joined = admit(self._queues[expert], len(self._live[expert]), self.max_batch, self.static,
                                       lambda r: r.cancelled.is_set(), lambda r: self._join(batch, r))
                        self._live[expert] += joined
                        self._cond.notify_all()
                    for r in gone:
                        r.sink(Finished("cancelled", 0))
                    now = self.clock.now()
                    for r in joined:
                        r.sink(self._started(r, source, switch_s, now))
                    source, switch_s = "device", 0.0  # later joiners found it there
                    for r in [r for r in self._live[expert] if r.cancelled.is_set()]:
                        self._retire(expert, batch, r)
                    if self._live[expert]:
                        rows = len(self._live[expert])
                        self.step_rows[rows] = self.step_rows.get(rows, 0) + 1
                        for r, d in batch.step(lease, self.prefill_chunk):
                            self._deliver(expert, batch, r, d)
                    with self._cond:
                        self._stepped[expert] = self.clock.now()
                        nxt = self._choose(expert, self.clock.now() - t0)
            except Exception as e:
                log.exception("generation failed on expert %s", expert)
                for r in list(self._live[expert]):
                    r.last = None
                    self._retire(expert, batch, r, Failed(e))
                nxt = None
            finally:
                batch.pause()
        return nxt

    def _drop_cancelled(self) -> list[GenRequest]:
        """Take the cancelled requests out of every queue (called with the lock held)."""
        gone = []
        for q in self._queues.values():
            if any(r.cancelled.is_set() for r in q):
                gone += [r for r in q if r.cancelled.is_set()]
                keep = [r for r in q if not r.cancelled.is_set()]
                q.clear()
                q.extend(keep)
        return gone

    def _join(self, batch: Any, r: GenRequest) -> bool:
        if not batch.fits(r):
            return False
        batch.admit(r)
        return True

    def _deliver(self, expert: str, batch: Any, r: GenRequest, d: "Delta") -> None:
        r.last = d
        if d.finish_reason != "error":  # a failed sequence gets Failed, below, and nothing else
            r.sink(d)
        if d.finish_reason is not None:
            self._retire(expert, batch, r)

    def _retire(self, expert: str, batch: Any, r: GenRequest, end: Event | None = None) -> None:
        """The request leaves its batch (its blocks freed) and gets its last event."""
        batch.leave(r)
        with self._cond:
            if r in self._live[expert]:
                self._live[expert].remove(r)
            self._cond.notify_all()
        r.sink(end if end is not None else self._end(r))
