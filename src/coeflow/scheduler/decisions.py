"""The scheduler's decisions as pure functions: which expert runs next and which requests
join its batch. The threaded scheduler (real backend) and the discrete-event replay
(modelled backend) both call these, so a simulated run makes the choices a real one would.
No clocks, threads or tensors here: the caller passes `now` and what is ready."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")

# How far each tier is from the engine; "loading": another request's prefetch is moving it.
DISTANCE = {"device": 0, "host": 1, "loading": 2, "disk": 2}


def reported_switch(arrived_in: str, found_in: str, switch_s: float, prefetched_s: float) -> tuple[str, float]:
    """The tier a request reports its expert came from, and the switch that kept it waiting:
    the farther of the tier it was in when the request arrived and the one its batch found it
    in (`switch_s`: the acquire's wait); from the arrival tier, the prefetch's part before the
    acquire (`prefetched_s`) counts too. The server and the replays report alike."""
    if DISTANCE.get(arrived_in, -1) > DISTANCE.get(found_in, 0):
        return arrived_in, switch_s + prefetched_s
    return found_in, switch_s


def waiting_since(oldest_queued: float | None, stepped: float | None, now: float, static: bool = False) -> float:
    """ExpertWork.since of an expert with work: its oldest queued request's arrival, or (with
    continuous batching) when its work last had the device if later, so that experts take
    turns; with running sequences only, when they last stepped."""
    if oldest_queued is not None:
        return oldest_queued if static or stepped is None else max(oldest_queued, stepped)
    return stepped if stepped is not None else now


def prefetch_tier(device_hop_copies: bool) -> str:
    """Where a queued request's expert is prefetched to. When the last hop (host -> device)
    is a copy (GPU, RDU), prefetch all the way so the copy overlaps other experts' compute.
    When it is free (a CPU, where the device tier is a pointer swap), stop at the host: the
    device tier holds only the experts about to run, and prefetching every queued expert
    into it makes prefetches evict each other, and wait behind leased experts, before
    their batches run."""
    return "device" if device_hop_copies else "host"


def pick_expert(heads: Iterable[tuple[float, str, bool]], now: float, max_wait_s: float,
                draining: bool = False) -> str | None:
    """`heads`: (arrival of the oldest queued request, expert, expert ready) per non-empty
    queue. The oldest request among ready experts goes first, so no switch stalls the
    worker; but a request older than `max_wait_s` (or any, while draining) goes first even
    if its expert must still be loaded: the bound on starvation. None: nothing can run."""
    heads = list(heads)
    if not heads:
        return None
    oldest_arrival, oldest, _ = min(heads)
    if now - oldest_arrival > max_wait_s or draining:
        return oldest
    ready = [(arrival, name) for arrival, name, is_ready in heads if is_ready]
    return min(ready)[1] if ready else None


def take_batch(queue: deque[T], max_batch: int, cancelled: Callable[[T], bool]) -> list[T]:
    """Pop up to `max_batch` requests from the front of one expert's queue, in arrival
    order; cancelled ones are dropped (and count towards nothing)."""
    batch: list[T] = []
    while queue and len(batch) < max_batch:
        r = queue.popleft()
        if not cancelled(r):
            batch.append(r)
    return batch


SCHEDULES = ("continuous", "static")


@dataclass(frozen=True)
class ExpertWork:
    """One expert with work, as the scheduler sees it between two steps."""
    name: str
    since: float  # when its work last had the device, or its oldest queued request's arrival if later
    queued: int
    running: int
    ready: bool  # its weights are where a step can start (else a load is still moving them)
    admissible: bool  # its oldest queued request fits in the KV cache now

    @property
    def runnable(self) -> bool:
        return self.running > 0 or (self.queued > 0 and self.admissible)


def next_expert(work: Iterable[ExpertWork], current: str | None, held_s: float, now: float, *,
                slice_s: float, max_wait_s: float, draining: bool = False) -> str | None:
    """Continuous batching across experts: which expert's batch takes the next step.

    The expert on the device (`current`, held for `held_s`) keeps it for at least `slice_s`,
    and after that while no other ready expert has work. Then the device goes to the ready
    expert whose work has waited longest (since the expert last had the device, or since its
    oldest queued request came if later; the one with more requests on a tie): experts with
    work take turns, so none waits more than a slice of each of the others, and a request
    once started is never paused for long. An expert whose load is still moving is not
    chosen (a switch to it would stall the device), unless its work is older than
    `max_wait_s`, or the server is draining: the bound on starvation. None: nothing can run
    now."""
    cands = [w for w in work if w.runnable]
    if not cands:
        return None
    cur = next((w for w in cands if w.name == current), None)
    others = [w for w in cands if w.name != current]
    if cur is not None and held_s < slice_s:
        return current
    overdue = [w for w in others if draining or now - w.since > max_wait_s]
    if overdue:
        return min(overdue, key=lambda w: (w.since, w.name)).name
    ready = [w for w in others if w.ready]
    if not ready:
        return current if cur is not None else None
    return min(ready, key=lambda w: (w.since, -(w.queued + w.running), w.name)).name


def next_expert_static(work: Iterable[ExpertWork], current: str | None, now: float, *, max_wait_s: float,
                       draining: bool = False) -> str | None:
    """Run-to-completion (`--schedule static`, the comparison's baseline): the expert on the
    device keeps it until its batch is done; then `pick_expert` over the queues."""
    work = [w for w in work if w.runnable]
    if any(w.name == current and w.running for w in work):
        return current
    return pick_expert([(w.since, w.name, w.ready) for w in work if w.queued], now, max_wait_s, draining)


def admit(queue: deque[T], running: int, max_batch: int, static: bool, cancelled: Callable[[T], bool],
          join: Callable[[T], bool]) -> list[T]:
    """Pop the requests that join an expert's batch now, in arrival order, up to `max_batch`
    running: `join(r)` admits r if the KV cache has room for it and says whether it did. The
    first that does not fit stops the rest, so a long request is not overtaken forever.
    Static batching admits only into an empty batch. Cancelled ones are dropped."""
    taken: list[T] = []
    if static and running:
        return taken
    while queue and running + len(taken) < max_batch:
        r = queue[0]
        if cancelled(r):
            queue.popleft()
            continue
        if not join(r):
            break
        taken.append(queue.popleft())
    return taken
