"""The expert store: every expert of a CoE file in one of three tiers, disk -> host -> device.

Rules that make it safe to call from many threads at once:
- One lock guards all bookkeeping; bytes move outside it, in loader threads.
- An expert is served only from a tier it is *ready* in: its weights dict is published after
  every byte is in (and, on CUDA, after the copy has landed), so a half-loaded expert is
  never visible. A failed load frees its bytes and marks the expert failed; others go on.
- The hierarchy is inclusive: an expert on the device also keeps its host copy, so leaving
  the device costs nothing and "unload" goes to DRAM, not to nothing.
- Leased, awaited, loading and pinned experts are never evicted; among the rest the lowest
  priority class leaves first and the policy (LRU by default) orders within it. Those rules
  live in tiers.Tier and tiers.Tiers, which the discrete-event replay uses too.
- One load per expert at a time: concurrent prefetches and acquires share its Future.
- A prefetch gives way: it evicts no expert that another prefetch brought up and no request
  has acquired since (each is wanted by a queued request), and gives up instead (the request
  loads its expert when it runs). Loads someone waits for evict those too, last (Tier's
  `spared`). Without this, a queue of more experts than a tier holds thrashes: each arrival's
  prefetch evicts an expert queued before it, which is then read from disk again when it runs.
- A delta expert (coeflow.model.delta) holds only its delta on the host and is rebuilt from
  its base on the device: its base is pinned to both tiers (an expert of the CoE file with the
  same checkpoint, or an entry of the store's own, "base:NAME", left out of `status`) and is
  loaded before any of its deltas.

The store decides; the backend it is given (coeflow.backend.real.RealBackend on a real
machine, a fake in tests) moves the bytes: this module holds no tensors of its own and takes
every time from the backend's clock, so it knows nothing of PyTorch or of the wall clock."""

from __future__ import annotations

import logging
import threading
from collections import deque
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from coeflow.coefile import CoEFile, ExpertSpec
from coeflow.errors import CoeflowError, ConfigError
from coeflow.store.policies import DEFAULT_POLICY, EvictionPolicy, Usage, make_policy
from coeflow.store.tiers import Arena, Counter, Tier, Tiers, parse_bytes

if TYPE_CHECKING:
    from coeflow.backend.interface import ExpertPlan, StoreBackend
    from coeflow.model.config import ModelConfig

log = logging.getLogger(__name__)

RANK = {"disk": 0, "host": 1, "device": 2}
RECENT_SWITCHES = 10


class ExpertUnavailableError(CoeflowError):
    """The expert cannot be served: its checkpoint is broken, or it cannot be made resident."""


class _Yielded(Exception):
    """A prefetch giving way (the store's rules above), inside its job: its Future resolves
    as any finished prefetch's does, and the expert loads when acquired."""


class UnknownExpertError(ConfigError, KeyError):
    """No expert of that name in the CoE file (also a KeyError, for dict-like callers)."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class ExpertStatus:
    name: str
    tier: str  # "device" | "host" | "disk" | "failed" | "loading"
    bytes: int
    hits: int
    misses: int
    last_used: float | None
    pinned: bool
    priority: int
    error: str | None
    recent_switches: list[dict] = field(default_factory=list)
    leases: int = 0
    base: str | None = None  # a delta expert's base checkpoint


class Lease:
    """The right to use an expert's weights: while held, the expert stays on the device tier
    and `weights` stay valid. Release it (or use `with`) when the engine is done with them;
    weights attached to an engine after release may be overwritten by another expert."""

    def __init__(self, store: "ExpertStore", name: str, config: "ModelConfig",
                 weights: dict[str, Any], source_tier: str, switch_s: float):
        self.name, self.config, self.weights = name, config, weights
        self.source_tier, self.switch_s = source_tier, switch_s
        self._store: ExpertStore | None = store
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            store, self._store = self._store, None
        if store is not None:
            store._release(self.name)

    @property
    def released(self) -> bool:
        return self._store is None

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"Lease({self.name!r}, from {self.source_tier}, {self.switch_s * 1e3:.1f} ms)"


@dataclass(eq=False)
class _Expert:
    spec: ExpertSpec
    layout: "ExpertPlan | None" = None
    error: str | None = None
    pinned: bool = False
    priority: int = 0
    job: Future | None = None
    job_target: str | None = None
    leases: int = 0
    waiters: int = 0
    prefetched: bool = False  # brought up by a prefetch and not acquired since
    job_yields: bool = False  # its job is a prefetch's, which gives way (no one waits on it yet)
    hits: int = 0
    misses: int = 0
    last_used: float | None = None
    recent: deque = field(default_factory=lambda: deque(maxlen=RECENT_SWITCHES))
    base: "_Expert | None" = None  # a delta expert's base
    hidden: bool = False  # a base the CoE file does not serve

    @property
    def name(self) -> str:
        return self.spec.name

    def bytes_in(self, tier: str) -> int:
        """What `tier` grants for the expert (a delta's device bytes are its rebuilt expert's)."""
        if self.layout is None:
            return 0
        return self.layout.device_block_bytes if tier == "device" else self.layout.block_bytes


def _gb(n: int) -> str:
    return f"{n / 1e9:.3f} GB" if n >= 10**7 else f"{n} bytes"


class ExpertStore:
    """Three tiers with byte budgets: `device_mem` (the experts the engine may attach; on
    CUDA a pre-allocated slab) and `host_mem` (one pre-allocated DRAM pool, pinned when CUDA
    is present). None means "room for every expert" (on CUDA capped at 90% of free memory).
    `backend` plans each expert and moves the bytes (its dtype and device are the experts');
    the caller owns it and closes it after the store. `clock` gives the time for last use and
    TTLs (the backend's; injectable for tests)."""

    def __init__(self, coe: CoEFile, backend: "StoreBackend", *, device_mem: int | str | None,
                 host_mem: int | str | None, policy: str | EvictionPolicy = DEFAULT_POLICY,
                 clock: Callable[[], float] | None = None):
        self.backend = backend
        self.policy = make_policy(policy)
        self._clock = clock or backend.clock.now
        self._cond = threading.Condition(threading.RLock())
        self._closed = False
        self._experts: dict[str, _Expert] = {}
        for spec in coe.experts:
            e = _Expert(spec, pinned=spec.pin, priority=spec.priority)
            try:
                e.layout = backend.plan(spec.name, spec.path, sha256=spec.sha256)
            except (CoeflowError, OSError) as err:
                e.error = str(err)
                log.warning("expert %s: marked failed: %s", spec.name, err)
            self._experts[spec.name] = e
        self._attach_bases()
        valid = [e for e in self._experts.values() if e.layout is not None]
        everything = {t: sum(e.bytes_in(t) for e in valid) for t in ("host", "device")}
        host_cap = parse_bytes(host_mem) if host_mem is not None else everything["host"]
        dev_cap = (parse_bytes(device_mem) if device_mem is not None
                   else backend.default_device_budget(everything["device"] if host_mem is None
                                                      else min(everything["device"], host_cap)))
        for e in valid:
            for tier, cap in (("device", dev_cap), ("host", host_cap)):
                if e.bytes_in(tier) > cap:
                    dtype = getattr(e.layout, "dtype", "its dtype")
                    raise ConfigError(f"expert {e.name!r} needs {_gb(e.bytes_in(tier))} in "
                                      f"{dtype} but the {tier} tier's budget is {_gb(cap)}")
        for tier, cap in (("device", dev_cap), ("host", host_cap)):
            pinned = sum(e.bytes_in(tier) for e in valid if e.pinned)
            if pinned > cap:
                raise ConfigError(f"pinned experts and the bases of delta experts need {_gb(pinned)} but "
                                  f"the {tier} tier holds {_gb(cap)}")
        backend.reserve(host_cap, dev_cap)
        # host: byte ranges of the backend's host pool; device: of its slab, or only a budget
        # where the engine attaches the host pool's tensors (no copy, so nothing to place)
        self._tiers = Tiers(Tier("host", Arena(host_cap), self.policy),
                            Tier("device", Arena(dev_cap) if backend.device_copies else Counter(dev_cap),
                                 self.policy))
        self._jobs = ThreadPoolExecutor(min(32, len(self._experts) + 2),
                                        thread_name_prefix="coeflow-store-load")
        self._stop = threading.Event()
        ttls = [e.spec.ttl_s for e in self._experts.values() if e.spec.ttl_s]
        self._janitor = None
        if ttls:
            interval = min(30.0, max(0.5, min(ttls) / 4))
            self._janitor = threading.Thread(target=self._janitor_loop, args=(interval,),
                                             name="coeflow-store-ttl", daemon=True)
            self._janitor.start()
        log.info("store: %d experts (%d failed), host %s, device %s (%s), policy %s",
                 len(self._experts), len(self._experts) - len(valid), _gb(host_cap), _gb(dev_cap),
                 "copies" if backend.device_copies else "pointer swap", self.policy.name)
        for e in valid:
            if e.pinned:
                self.prefetch(e.name)

    # ---------------------------------------------------------------- public API
    def acquire(self, name: str, timeout: float | None = None) -> Lease:
        """Block until `name` is ready on the device tier; the lease keeps it there."""
        t0 = self.backend.clock.now()
        with self._cond:
            e = self._get(name)
            self._sweep()
            if e.error is not None:
                raise ExpertUnavailableError(f"expert {name!r} is unavailable: {e.error}")
            source = self._tier(e)
            self.policy.on_access(name, self._clock())
            if self._tiers.device.ready(name):
                e.hits += 1
                return self._lease(e, source, t0, switched=False)
            e.misses += 1
            e.waiters += 1
            fut = self._ensure(e, "device")
        try:
            while True:
                fut.result(timeout=timeout)
                with self._cond:
                    if self._tiers.device.ready(name):  # (the waiter keeps it there)
                        break
                    fut = self._ensure(e, "device")  # it joined a prefetch that gave way before it waited
        except BaseException as err:
            with self._cond:
                e.waiters -= 1
                self._cond.notify_all()
            if isinstance(err, TimeoutError):
                raise TimeoutError(f"expert {name!r} not resident after {timeout} s "
                                   "(its load goes on)") from None
            if isinstance(err, CancelledError):
                raise ExpertUnavailableError("the expert store is closed") from None
            raise
        with self._cond:
            e.waiters -= 1
            return self._lease(e, source, t0, switched=True)

    @property
    def device_copies(self) -> bool:
        """Whether host -> device is a copy (CUDA) rather than a pointer swap (CPU)."""
        return self.backend.device_copies

    def prefetch(self, name: str, tier: str = "device") -> Future:
        """Start moving `name` up to `tier` ("host" or "device") now; returns at once. Every
        caller asking for the same expert while it moves gets the same Future."""
        if tier not in ("host", "device"):
            raise ConfigError(f"cannot prefetch into tier {tier!r}; choose host or device")
        with self._cond:
            e = self._get(name)
            e.prefetched = True
            return self._ensure(e, tier, yields=True)

    def load(self, name: str, tier: str = "device") -> None:
        """Make `name` ready in `tier` ("host" or "device") and return. A failed expert is
        retried: its checkpoint is read and checked again."""
        if tier not in ("host", "device"):
            raise ConfigError(f"cannot load into tier {tier!r}; choose host or device")
        with self._cond:
            e = self._get(name)
            retry = e.error is not None and e.job is None
        if retry:
            try:
                layout = self.backend.plan(name, e.spec.path, sha256=e.spec.sha256)
            except (CoeflowError, OSError) as err:
                with self._cond:
                    e.error = str(err)
                raise ExpertUnavailableError(f"expert {name!r} is unavailable: {err}") from None
            with self._cond:
                budgets = self.budgets
                if layout.block_bytes > budgets["host"] or layout.device_block_bytes > budgets["device"]:
                    raise ConfigError(f"expert {name!r} needs {_gb(layout.nbytes)}, more than a tier's budget")
                e.layout, e.error = layout, None
        with self._cond:
            fut = self._ensure(e, tier)
        fut.result()

    def unload(self, name: str, tier: str = "host") -> None:
        """Move `name` down to `tier`: "host" frees its device bytes, "disk" frees both."""
        if tier not in ("host", "disk"):
            raise ConfigError(f"cannot unload to tier {tier!r}; choose host or disk")
        while True:
            with self._cond:
                e = self._get(name)
                fut = e.job
                if fut is None:
                    if e.pinned:
                        raise ConfigError(f"expert {name!r} is pinned to the device tier; unpin it first")
                    if e.leases or e.waiters:
                        raise ConfigError(f"expert {name!r} is in use ({e.leases} leases, "
                                          f"{e.waiters} waiting); release them first")
                    self._evict(name, "device" if tier == "host" else "host")
                    self._cond.notify_all()
                    return
            try:
                fut.result()
            except CoeflowError:
                pass

    def pin(self, name: str, pinned: bool = True) -> None:
        """Pinned experts are loaded to the device tier now and never evicted."""
        with self._cond:
            e = self._get(name)
            if pinned and not e.pinned and e.layout is not None:
                for tier, cap in self.budgets.items():
                    total = e.bytes_in(tier) + sum(x.bytes_in(tier) for x in self._experts.values() if x.pinned)
                    if total > cap:
                        raise ConfigError(f"pinning {name!r} would pin {_gb(total)}, more than the "
                                          f"{tier} tier's {_gb(cap)}")
            if not pinned and any(x.base is e for x in self._experts.values()):
                raise ConfigError(f"expert {name!r} is the base of delta experts and stays pinned")
            e.pinned = pinned
            self._cond.notify_all()
            if pinned and e.error is None:
                self._ensure(e, "device")

    def config(self, name: str) -> "ModelConfig":
        """The expert's model config (known from start-up, before any weight is read)."""
        with self._cond:
            e = self._get(name)
            if e.layout is None:
                raise ExpertUnavailableError(f"expert {name!r} is unavailable: {e.error}")
            return e.layout.config

    def tier_of(self, name: str) -> str:
        """The tier `status()` would report for one expert, without building every status
        (the scheduler asks on each request)."""
        with self._cond:
            return self._reported_tier(self._get(name))

    def failure(self, name: str) -> str | None:
        """Why `name` cannot be served, or None: its last load's error."""
        with self._cond:
            return self._get(name).error

    def _reported_tier(self, e: _Expert) -> str:
        return "loading" if e.job is not None and e.error is None else self._tier(e)

    def _tier(self, e: _Expert) -> str:
        """The highest tier `e` is ready in, or "failed"."""
        return "failed" if e.error is not None else self._tiers.ready_tier(e.name)

    def status(self) -> list[ExpertStatus]:
        with self._cond:
            self._sweep()
            return [ExpertStatus(
                name=e.name,
                tier=self._reported_tier(e),
                bytes=e.layout.nbytes if e.layout else 0,
                hits=e.hits, misses=e.misses, last_used=e.last_used, pinned=e.pinned,
                priority=e.priority, error=e.error, recent_switches=list(e.recent), leases=e.leases,
                base=str(e.base.spec.path) if e.base is not None else None,
            ) for e in self._experts.values() if not e.hidden]

    @property
    def budgets(self) -> dict[str, int]:
        return {"host": self._tiers.host.capacity, "device": self._tiers.device.capacity}

    def used(self) -> dict[str, int]:
        """Bytes granted in each tier now (loads in flight included)."""
        with self._cond:
            return {"host": self._tiers.host.used, "device": self._tiers.device.used}

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._stop.set()
        self._jobs.shutdown(wait=False, cancel_futures=True)
        with self._cond:
            for e in self._experts.values():
                if e.job is not None:
                    e.job.cancel()  # only jobs that never started: their waiters must not hang
        self._jobs.shutdown(wait=True)
        if self._janitor is not None:
            self._janitor.join()

    def __enter__(self) -> "ExpertStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- internals
    def _get(self, name: str) -> _Expert:
        if self._closed:
            raise ExpertUnavailableError("the expert store is closed")
        try:
            return self._experts[name]
        except KeyError:
            raise UnknownExpertError(f"no expert named {name!r} (known: "
                                     f"{', '.join(self._experts)})") from None

    def _lease(self, e: _Expert, source: str, t0: float, switched: bool) -> Lease:
        e.leases += 1
        e.prefetched = False
        e.last_used = self._clock()
        seconds = self.backend.clock.now() - t0
        if switched:
            e.recent.append({"source_tier": source, "seconds": seconds, "at": e.last_used})
        weights = self._tiers.device.weights(e.name)
        assert e.layout is not None and weights is not None
        return Lease(self, e.name, e.layout.config, dict(weights), source, seconds)

    def _release(self, name: str) -> None:
        with self._cond:
            e = self._experts[name]
            e.leases -= 1
            e.last_used = self._clock()
            self._cond.notify_all()

    def _ensure(self, e: _Expert, target: str, yields: bool = False) -> Future:
        """The Future of a job bringing `e` up to `target` (lock held): a finished one if it
        is there already, the running job if that goes at least as high, else a new job
        chained after the running one. `yields`: a prefetch's, which gives way (ends without
        moving the expert) rather than evict an expert another prefetch brought up, unless an
        acquire or a load asks for the same job."""
        if e.error is not None:
            fut: Future = Future()
            fut.set_exception(ExpertUnavailableError(f"expert {e.name!r} is unavailable: {e.error}"))
            return fut
        if RANK[self._tier(e)] >= RANK[target]:
            fut = Future()
            fut.set_result(None)
            return fut
        if e.job is not None and RANK[e.job_target or "disk"] >= RANK[target]:
            e.job_yields = e.job_yields and yields
            return e.job
        fut = Future()
        self._jobs.submit(self._run_job, e, target, e.job, fut)
        e.job, e.job_target, e.job_yields = fut, target, yields
        return fut

    def _run_job(self, e: _Expert, target: str, prev: Future | None, fut: Future) -> None:
        if not fut.set_running_or_notify_cancel():
            return  # cancelled by close() before it started
        error: BaseException | None = None
        try:
            if prev is not None:
                try:
                    prev.result()
                except CoeflowError:
                    pass
            if e.error is not None:
                raise ExpertUnavailableError(f"expert {e.name!r} is unavailable: {e.error}")
            if e.base is not None:
                self._await_base(e, target)
            self._to_host(e)
            if target == "device":
                self._to_device(e)
        except _Yielded:  # a prefetch that gave way is done: its expert loads when acquired
            pass
        except BaseException as err:  # delivered to every waiter through the Future
            error = err
        with self._cond:
            if e.job is fut:
                e.job, e.job_target, e.job_yields = None, None, False
            self._cond.notify_all()
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)

    def _evict(self, name: str, tier: str) -> None:
        """Drop `name` from `tier` (and, leaving the host, from the device) and tell the backend."""
        self._tiers.evict(name, tier)
        if tier == "host":
            self._experts[name].prefetched = False
        for t in ("device", "host") if tier == "host" else ("device",):
            self.backend.evicted(name, t)

    def _await_base(self, e: _Expert, target: str) -> None:
        """Wait until a delta expert's base is ready in `target` (it is pinned: it stays)."""
        assert e.base is not None
        with self._cond:
            fut = self._ensure(e.base, target)
        try:
            fut.result()
        except CoeflowError as err:
            with self._cond:  # a base that failed its checks fails its deltas until it is repaired
                if e.base.error is not None:
                    e.error = f"its base {e.base.spec.path} is unavailable: {e.base.error}"
            raise ExpertUnavailableError(f"expert {e.name!r}: its base {e.base.spec.path} is unavailable: "
                                         f"{err}") from None

    def _attach_bases(self) -> None:
        """Give each delta expert its base entry: the CoE file's expert with the base's checkpoint
        if there is one, else one of the store's own, pinned; a base that cannot be planned
        marks its deltas failed."""
        by_path = {e.spec.path.resolve(): e for e in self._experts.values() if e.spec.quantize is None}
        for e in list(self._experts.values()):
            delta = getattr(e.layout, "delta", None)
            if delta is None:
                continue
            base = by_path.get(delta.base)
            if base is None:
                name = f"base:{delta.base.name}"
                while name in self._experts:
                    name += "'"
                spec = ExpertSpec(name=name, path=delta.base, sha256=delta.base_sha256)
                base = by_path[delta.base] = self._experts[name] = _Expert(spec, hidden=True)
                try:
                    base.layout = self.backend.plan(name, delta.base, sha256=delta.base_sha256)
                except (CoeflowError, OSError) as err:
                    base.error = str(err)
            if base.error is not None:
                e.error = f"its base {delta.base} cannot be served: {base.error}"
                log.warning("expert %s: marked failed: %s", e.name, e.error)
                continue
            e.base, base.pinned = base, True

    def _to_host(self, e: _Expert) -> None:
        host = self._tiers.host
        with self._cond:
            if e.name in host:
                return
            off = self._make_room(host, e)
        layout = e.layout
        assert layout is not None
        try:
            moved = self.backend.move(e.name, "disk", "host", off)
        except Exception as err:
            with self._cond:
                host.drop(e.name)
                e.error = str(err) if isinstance(err, CoeflowError) else f"{type(err).__name__}: {err}"
                self._cond.notify_all()
            log.error("expert %s: load failed, marked failed: %s", e.name, e.error)
            raise ExpertUnavailableError(f"expert {e.name!r} is unavailable: {e.error}") from None
        with self._cond:
            host.loaded(e.name, self._clock(), moved.weights)
            self._cond.notify_all()
        log.info("expert %s: disk -> host %s in %.3f s (%.2f GB/s)", e.name, _gb(layout.nbytes), moved.seconds,
                 layout.nbytes / max(moved.seconds, 1e-9) / 1e9)

    def _to_device(self, e: _Expert) -> None:
        device = self._tiers.device
        with self._cond:
            if e.name in device:
                return
            off = self._make_room(device, e)
        layout = e.layout
        assert layout is not None
        try:
            moved = self.backend.move(e.name, "host", "device", off)
        except Exception as err:
            with self._cond:
                device.drop(e.name)
                self._cond.notify_all()
            raise ExpertUnavailableError(f"expert {e.name!r}: host -> device copy failed: {err}") from None
        if self.backend.device_copies:
            log.info("expert %s: host -> device %s in %.3f s (%.2f GB/s)", e.name, _gb(layout.nbytes),
                     moved.seconds, layout.nbytes / max(moved.seconds, 1e-9) / 1e9)
        with self._cond:
            device.loaded(e.name, self._clock(), moved.weights)
            self._cond.notify_all()

    def _usage(self, name: str) -> Usage:
        e = self._experts[name]
        return Usage(e.last_used, e.hits + e.misses, e.priority)

    @staticmethod
    def _evictable(e: _Expert) -> bool:
        return not (e.leases or e.waiters or e.job is not None or e.pinned)

    def _make_room(self, tier: Tier, e: _Expert) -> int:
        """Grant `e`'s bytes in `tier`, evicting as needed (lock held). Waits while the room is
        held by leased or loading experts; refuses when only pinned experts hold it."""
        def evict(victim: str) -> None:
            log.info("expert %s: evicted from %s for %s (%s)", victim, tier.name, e.name, self.policy.name)
            self._evict(victim, tier.name)

        while True:
            if self._closed:
                raise ExpertUnavailableError("the expert store is closed")
            nbytes = e.bytes_in(tier.name)
            yields = e.job_yields and not e.waiters
            off = tier.grant(e.name, nbytes)
            if off is None:
                self._sweep()  # experts past their TTL leave before any eviction
                off = tier.make_room(e.name, nbytes, self._clock(), self._usage,
                                     lambda n: n != e.name and self._evictable(self._experts[n]), evict,
                                     spared=lambda n: self._experts[n].prefetched, take_spared=not yields)
            if off is None and yields:
                raise _Yielded(f"expert {e.name!r}: prefetch gave way to experts queued requests want")
            if off is not None:
                return off
            busy = any(x is not e and (x.leases or x.waiters or x.job is not None)
                       for x in self._experts.values())
            if not busy:
                raise ExpertUnavailableError(
                    f"expert {e.name!r} ({_gb(nbytes)}) does not fit in the {tier.name} tier "
                    f"({_gb(tier.capacity)}): the rest is held by pinned experts")
            log.info("expert %s: waiting for room in the %s tier (held by leased or loading experts)",
                     e.name, tier.name)
            self._cond.wait()

    def _sweep(self) -> None:
        """Unload experts idle for longer than their TTL (lock held)."""
        now = None
        for e in self._experts.values():
            ttl = e.spec.ttl_s
            if not ttl or not self._tiers.host.ready(e.name) or not self._evictable(e):
                continue
            now = self._clock() if now is None else now
            loaded_at = self._tiers.host.residents[e.name].loaded_at
            idle_since = e.last_used if e.last_used is not None else loaded_at
            if now - idle_since > ttl:
                log.info("expert %s: idle for %.0f s > ttl %.0f s, unloaded", e.name, now - idle_since, ttl)
                self._evict(e.name, "host")

    def _janitor_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            with self._cond:
                if self._closed:
                    return
                self._sweep()
                self._cond.notify_all()
