"""The scheduler's decisions as pure functions: which expert runs next and which requests
form its batch. The threaded scheduler (real backend) and the discrete-event replay
(modelled backend) both call these, so a simulated run makes the choices a real one would.
No clocks, threads or tensors here: the caller passes `now` and what is ready."""

from __future__ import annotations

from collections import deque
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")

# How far each tier is from the engine; "loading": another request's prefetch is moving it.
# A request reports the farther of the tier its expert was in on arrival and the tier its
# batch found it in (Scheduler._started, and the replay alike).
DISTANCE = {"device": 0, "host": 1, "loading": 2, "disk": 2}


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
