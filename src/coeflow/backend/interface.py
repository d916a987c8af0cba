"""What the CoE core asks of the machine under it: move an expert from one tier to the next,
run an expert's batch, and tell the time. The store and the scheduler (the real path) and
the discrete-event replay (the modelled path, coeflow.sim.replay) ask only this, so the same
decisions run on PyTorch and the wall clock (coeflow.backend.real.RealBackend) or on the
hardware model and a simulated clock (coeflow.sim.modelled.ModelledBackend).

Batches are asked for in two ways: the threaded scheduler steps an expert's running batch
(`ServingBackend.batch`), the replay costs one step of it (`ReplayBackend.step`, continuous
batching) or a whole batch at once (`ReplayBackend.run_batch`, static batching).

A backend *does* each operation and says how long it took: the real one blocks while bytes
move or tokens are generated and returns the measured seconds; the modelled one moves
nothing and returns the seconds the hardware model predicts, which the replay adds to its
simulated clock."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

TIERS = ("disk", "host", "device")  # the store's tier names, slowest first


@dataclass(frozen=True)
class BatchTimes:
    """One batch on one expert: time to the first token, then per further token."""
    ttft_s: float
    tpot_s: float
    hbm_bytes: float = 0.0  # bytes read from the device's fast memory by the whole batch (all devices)

    def finish_s(self, gen: int) -> float:
        """Seconds from the batch's start to a sequence's last of `gen` tokens."""
        return self.ttft_s + (max(gen, 1) - 1) * self.tpot_s


@dataclass(frozen=True)
class StepTimes:
    """One step of an expert's running batch: its prefill chunks, then a token for each
    decoding sequence."""
    seconds: float
    hbm_bytes: float = 0.0  # bytes read from the device's fast memory (all devices)


@dataclass(frozen=True)
class Moved:
    """One hop done: how long it took, and the expert's weights in the destination tier
    (tensors on the real backend; None on the modelled one, which holds no tensors)."""
    seconds: float
    weights: Any = None


class BatchJob(Protocol):
    """What any backend reads of a request in a batch. The real backend also needs the
    token ids, sampling parameters and a cancel flag (coeflow.scheduler.GenRequest)."""
    @property
    def prompt_tokens(self) -> int: ...

    @property
    def gen_tokens(self) -> int: ...  # the most tokens it may generate


class ExpertBatch(Protocol):
    """One expert's running sequences on a backend, for continuous batching: between two steps
    the scheduler admits jobs (`fits` says whether the KV cache has room for one now), and
    each `step` runs one iteration: up to `prefill_budget` prompt tokens of jobs still being
    prefilled, then one decode step of the others. A job that finished or was cancelled
    `leave`s at once; `pause` before another expert's batch runs (the jobs' keys stay)."""

    def check(self, job: Any) -> None:
        """Raise InvalidRequestError if the job can never run here (e.g. longer than the cache)."""

    def fits(self, job: Any) -> bool:
        """Whether the job can be admitted now."""

    def admit(self, job: Any) -> None: ...

    def step(self, resident: Any, prefill_budget: int) -> list[tuple[Any, Any]]:
        """One iteration on the expert's weights (`resident`: a store lease); the (job,
        engine.Delta) pairs it produced."""

    def leave(self, job: Any) -> None: ...

    def pause(self) -> None: ...

    def warm(self, resident: Any, max_rows: int) -> int:
        """Prepare every step shape a batch of up to `max_rows` can take (compile it), so none
        is prepared on a request's path; returns how many."""


class Clock(Protocol):
    def now(self) -> float: ...


class Backend(Protocol):
    """What the store, the scheduler and the replay all ask."""
    clock: Clock

    @property
    def device_copies(self) -> bool:
        """Whether host -> device is a copy (GPU, RDU) or free (a CPU: a pointer swap)."""

    def expert_bytes(self, expert: str, tier: str = "host") -> int:
        """Bytes of the expert's weights as `tier` holds them (a delta expert is more on the
        device, where it is rebuilt, than below it)."""

    def move(self, expert: str, src: str, dst: str, slot: int = 0) -> Moved:
        """Bring `expert` from tier `src` up to tier `dst` (one hop: disk -> host or host ->
        device), into the byte offset `slot` of the destination tier that the store granted."""

    def route_s(self, batch: int, prompt: int) -> float:
        """Seconds the router takes on the compute resource for a batch of prompts (0 where
        routing runs elsewhere: the server routes on its HTTP threads)."""


class ServingBackend(Backend, Protocol):
    """What the threaded scheduler asks besides: each expert's running batch."""

    def batch(self, expert: str) -> ExpertBatch:
        """The expert's running batch (made on first use; the same object while it lives)."""


class ReplayBackend(Backend, Protocol):
    """What the discrete-event replay asks besides: the cost of a step, of a whole batch,
    and the KV cache's size."""

    def step(self, expert: str, prefills: Sequence[tuple[int, int]], decode_rows: int, decode_context: int) -> StepTimes:
        """One step: prefill each (new tokens, tokens already cached) chunk, one sequence at a
        time, then decode one token for each of `decode_rows` sequences, which hold
        `decode_context` tokens in their KV cache on average."""

    def kv_bytes(self, expert: str, tokens: int) -> int:
        """What `tokens` tokens of the expert's KV cache take."""

    def kv_budget(self) -> int:
        """The KV cache's bytes when the user gives none."""

    def run_batch(self, expert: str, resident: Any, batch: Sequence[BatchJob],
                  on_token: Callable[[Any], None] | None = None) -> BatchTimes:
        """Prefill the batch's prompts, then decode until each is done. `resident` is what the
        store handed out for the expert (config and weights; None on the modelled backend);
        `on_token` receives each generated token (engine.Delta) as it comes."""


class ExpertPlan(Protocol):
    """How a backend will hold one expert: known from its checkpoint's headers alone."""
    config: Any  # coeflow.model.ModelConfig
    nbytes: int  # the weights' bytes
    block_bytes: int  # what the host tier grants for it (nbytes plus alignment)
    device_block_bytes: int  # what the device tier grants (more for a delta: rebuilt whole there)


class StoreBackend(Backend, Protocol):
    """What the threaded store (coeflow.store.ExpertStore) needs besides the operations: to
    plan each expert at start-up, and to reserve each tier's memory once."""

    def plan(self, expert: str, path: Any, sha256: str | None = None) -> ExpertPlan:
        """Read the checkpoint's headers; raise CoeflowError/OSError if it cannot be served.
        `sha256` (the CoE file's, if given) is what the files must hash to when read."""

    def default_device_budget(self, everything: int) -> int:
        """The device tier's bytes when the user gives no budget."""

    def reserve(self, host_bytes: int, device_bytes: int) -> None:
        """Allocate the tiers' memory (before any move)."""

    def evicted(self, expert: str, tier: str) -> None:
        """The store no longer holds `expert` in `tier`: memory the backend gave it there
        beyond the tier's own (a delta rebuilt on a CPU) may be reused."""


class WallClock:
    """Real time: monotonic (differences are durations even if the system clock is stepped),
    offset once to the epoch so that timestamps the store reports (last use) read as dates."""

    def __init__(self) -> None:
        self._epoch = time.time() - time.monotonic()

    def now(self) -> float:
        return self._epoch + time.monotonic()


class SimClock:
    """Simulated time: starts at 0 and moves only when the replay advances it (the modelled
    backend's operations take time only in the replay's accounting)."""

    def __init__(self) -> None:
        self._t = 0.0

    def now(self) -> float:
        return self._t

    def reset(self) -> None:
        self._t = 0.0

    def advance_to(self, t: float) -> None:
        if t > self._t:
            self._t = t
