"""The modelled backend (coeflow.backend.interface.Backend done on paper): time from the
hardware model, no tensors. Tiers map onto the machine's memories: `device` is HBM (or, on
a CPU, the experts the engine may attach), `host` is the expert store (socket DDR on an
RDU, host DRAM on a GPU server or a CPU), `disk` is the checkpoint files (only where the
machine's spec gives a disk read rate)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from coeflow.backend.interface import BatchJob, BatchTimes, Moved, SimClock, StepTimes
from coeflow.errors import ConfigError
from coeflow.hw.generation import generation_cost, step_cost
from coeflow.hw.placement import kv_bytes_per_device
from coeflow.hw.shapes import DecoderShape
from coeflow.hw.spec import Hardware, Stack
from coeflow.hw.switching import expert_store_tier, switch_time_s
from coeflow.sim.coe import KV_RESERVE_BATCH, KV_RESERVE_TOKENS

KV_GRAIN = 16  # tokens: decode contexts are costed rounded up to this


@dataclass(frozen=True)
class Machine:
    """A modelled machine: a hardware spec plus what the spec files do not say about the
    tiers around it. Shipped systems keep every expert in their expert store from the start
    (the paper's setting); a probed machine (`coeflow hw probe`) also reads from disk."""
    hw: Hardware
    stack: str | Stack | None = None  # None: the hardware's default stack
    tp: int | None = None  # None: every device
    disk_read_bps: float | None = None  # disk -> host; None: experts start in the host tier
    disk_read_latency_s: float = 0.0  # fixed cost per expert read
    device_is_host: bool = False  # a CPU: host -> device is a pointer swap, no copy
    bytes_per_param: int = 2  # weights as the tiers hold them (the graph counts bf16)

    @property
    def name(self) -> str:
        return self.hw.name

    @property
    def devices(self) -> int:
        return self.tp or self.hw.count


class ModelledBackend:
    """The backend operations (interface.Backend) done on paper: nothing moves and nothing
    runs, each operation returns the seconds `coeflow.hw` predicts for it: generation_cost
    for batches, switch_time_s for copies into HBM, the disk rate for reads. Experts may
    differ in shape; `router` (a decoder shape) is costed as a prefill plus one token."""

    def __init__(self, machine: Machine, shapes: dict[str, DecoderShape],
                 router: DecoderShape | None = None):
        if not shapes:
            raise ConfigError("the CoE has no experts")
        self.machine, self.shapes, self.router = machine, shapes, router
        self.clock = SimClock()
        self._bytes = {n: s.weight_bytes(machine.bytes_per_param) for n, s in shapes.items()}
        self._stored = {n: s.stored_bytes(machine.bytes_per_param) for n, s in shapes.items()}
        self._steps: dict[tuple, StepTimes] = {}  # step costs by (shape, prefills, rows, context grain)

    @property
    def device_copies(self) -> bool:
        return not self.machine.device_is_host

    def expert_bytes(self, expert: str, tier: str = "host") -> int:
        """As the tier holds it: a delta expert is its delta below the device, rebuilt there."""
        return self._bytes[expert] if tier == "device" else self._stored[expert]

    def bases(self) -> dict[str, int]:
        """The bases of the delta experts and their bytes: each is held once in every tier."""
        return {s.delta_base: self._bytes[n] for n, s in self.shapes.items() if s.delta_base is not None}

    def move(self, expert: str, src: str, dst: str, slot: int = 0) -> Moved:
        return Moved(self.move_s(expert, src, dst))

    def run_batch(self, expert: str, resident: Any, batch: Sequence[BatchJob],
                  on_token: Callable[[Any], None] | None = None) -> BatchTimes:
        """The batch runs to its longest prompt and its longest generation."""
        return self.batch_times(expert, len(batch), max(r.prompt_tokens for r in batch),
                                max(r.gen_tokens for r in batch))

    def step(self, expert: str, prefills: Sequence[tuple[int, int]], decode_rows: int, decode_context: int) -> StepTimes:
        """Costed with the decode context rounded up to KV_GRAIN tokens (a paged KV block: at
        most a block's reads more), so that a replay's million steps reuse a few thousand costs."""
        m, shape = self.machine, self.shapes[expert]
        key = (id(shape), tuple(prefills), decode_rows, -(-decode_context // KV_GRAIN))
        got = self._steps.get(key)
        if got is None:
            c = step_cost(m.hw, shape, key[1], decode_rows, key[3] * KV_GRAIN, m.tp, m.stack)
            got = self._steps[key] = StepTimes(c.time_s, c.hbm_bytes)
        return got

    def kv_bytes(self, expert: str, tokens: int) -> int:
        return int(self.machine.devices * kv_bytes_per_device(self.shapes[expert], self.machine.devices, 1, tokens))

    def kv_budget(self) -> int:
        """A KV cache for batch 8 at 4K tokens of the largest expert: what default_budgets
        leaves out of the device tier for it."""
        n = self.machine.devices
        big = max(self.shapes.values(), key=lambda s: s.weight_bytes())
        return int(n * kv_bytes_per_device(big, n, KV_RESERVE_BATCH, KV_RESERVE_TOKENS))

    def move_s(self, expert: str, src: str, dst: str) -> float:
        """A hop moves the bytes the lower tier holds. A delta expert is then rebuilt on the
        device: its base read and the expert written, once each, at the device memory's peak."""
        m, nbytes = self.machine, self._stored[expert]
        if (src, dst) == ("disk", "host"):
            if m.disk_read_bps is None:
                raise ConfigError(f"{m.name} has no disk read rate in its spec: give a host tier "
                                  "that holds every expert")
            return m.disk_read_latency_s + nbytes / m.disk_read_bps
        if (src, dst) == ("host", "device"):
            rebuild = 2 * self._bytes[expert] / self.bandwidth("device") if self.shapes[expert].delta_base else 0.0
            if m.device_is_host:
                return rebuild
            return switch_time_s(m.hw, float(nbytes), expert_store_tier(m.hw), devices=m.devices) + rebuild
        raise ConfigError(f"no move from tier {src!r} to {dst!r}; moves are disk->host, host->device")

    def batch_times(self, expert: str, batch: int, prompt: int, gen: int) -> BatchTimes:
        m = self.machine
        c = generation_cost(m.hw, self.shapes[expert], batch, prompt, gen, m.tp, m.stack)
        hbm = c.tp * (c.prefill.bytes_by_tier.get("hbm", 0.0)
                      + (gen - 1) * c.decode_step.bytes_by_tier.get("hbm", 0.0))
        return BatchTimes(c.ttft_s, c.tpot_s, hbm)

    def route_s(self, batch: int, prompt: int) -> float:
        if self.router is None:
            return 0.0
        m = self.machine
        return generation_cost(m.hw, self.router, batch, prompt, 1, m.tp, m.stack).total_s

    def default_budgets(self) -> dict[str, int]:
        """Bytes per tier when the user gives none. Device: all HBM less the reserves, the
        router and a KV cache for batch 8 at 4K tokens of the largest expert (as
        coeflow.sim.coe.Deployment). Host: all DDR (RDU), host DRAM less its reserve (GPU,
        CPU)."""
        m, hw = self.machine, self.machine.hw
        host = (hw.count * hw.device.ddr.capacity if hw.device.ddr is not None
                else hw.host_memory - hw.host_reserve)
        if m.device_is_host:
            return {"device": int(host), "host": int(host)}
        router = self.router.weight_bytes(m.bytes_per_param) if self.router else 0
        device = m.devices * (hw.device.hbm.capacity - hw.device_reserve) - router - self.kv_budget()
        return {"device": int(max(0, device)), "host": int(host)}

    def bandwidth(self, tier: str) -> float:
        """Peak bytes/s of the device tier's memory across the devices used (for utilisation)."""
        return self.machine.devices * self.machine.hw.device.hbm.bandwidth
