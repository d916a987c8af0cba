"""The replay of the server's continuous batching (`--schedule continuous`), step by step.

Between two steps it makes the server's decisions with the server's code: which expert's
batch takes the next step (decisions.next_expert, over the same ExpertWork the threaded
scheduler builds) and which queued requests join it (decisions.admit, a request joining
only when the KV cache holds its prompt and every token it will generate). A step
prefills up to `prefill_chunk` prompt tokens of the sequences that joined, in order, then
decodes one token for every prefilled sequence, as backend.real.RealBatch does; its
seconds come from the backend (ReplayBackend.step). An expert keeps its lease, as in
Scheduler._serve, from its first step until the decisions give the device to another.

What it leaves out: the prefix cache (a trace holds token counts, not tokens, so every
prompt is prefilled whole) and cancellations."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from coeflow.errors import ConfigError
from coeflow.scheduler.decisions import ExpertWork, admit, next_expert, reported_switch, waiting_since
from coeflow.sim.replay import Replay, ReplayResult, RequestRecord

BLOCK_TOKENS = 16  # the paged KV cache's block (engine.paged.BLOCK_SIZE): reservations are whole blocks


@dataclass
class _Seq:
    index: int
    queued_at: float
    prompt: int
    gen: int
    kv: int  # bytes reserved
    start_s: float = 0.0
    source_tier: str = "device"
    switch_s: float = 0.0
    batch: int = 0  # running sequences when it joined, itself included
    prefilled: int = 0
    made: int = 0  # tokens generated
    first_token_s: float | None = None


class ContinuousReplay(Replay):
    def __init__(self, *args, kv_budget: int) -> None:
        super().__init__(*args)
        self.kv_budget, self.kv_used = kv_budget, 0
        self.live: dict[str, list[_Seq]] = {}
        self.active: set[str] = set()  # experts with queued or running requests
        self.stepped: dict[str, float] = {}  # when each expert's sequences last stepped
        self.records: list[RequestRecord | None] = [None] * len(self.reqs)
        for i, r in enumerate(self.reqs):
            if self._kv_of(i) > kv_budget:
                raise ConfigError(f"request {i} ({r.prompt_tokens} prompt + {r.gen_tokens} generated tokens on "
                                  f"{r.expert!r}) needs {self._kv_of(i) / 1e9:.3f} GB of KV cache, more than its "
                                  f"budget of {kv_budget / 1e9:.3f} GB: give a larger --kv-mem")

    def _kv_of(self, i: int) -> int:
        r = self.reqs[i]
        blocks = -(-(r.prompt_tokens + r.gen_tokens) // BLOCK_TOKENS)
        return self.b.kv_bytes(r.expert, blocks * BLOCK_TOKENS)

    # -- the scheduler's view (Scheduler._work) -------------------------------------------
    def submit(self, i: int, now: float) -> None:
        super().submit(i, now)
        self.active.add(self.reqs[i].expert)

    def _work(self, now: float) -> list[ExpertWork]:
        out = []
        for name in list(self.active):
            q, live = self.queues.get(name), self.live.get(name, [])
            if not q and not live:
                self.active.discard(name)
                continue
            since = waiting_since(q[0][0] if q else None, self.stepped.get(name), now)
            admissible = bool(q) and len(live) < self.opts.max_batch and self._fits(q[0])
            out.append(ExpertWork(name, since, len(q or ()), len(live), self.ready(name, now), admissible))
        return out

    def _fits(self, queued: tuple[float, int]) -> bool:
        return self.kv_used + self._kv_of(queued[1]) <= self.kv_budget

    def _reserve(self, queued: tuple[float, int]) -> bool:
        """Take the KV cache a queued request needs if it fits (admit's `join`)."""
        if not self._fits(queued):
            return False
        self.kv_used += self._kv_of(queued[1])
        return True

    def _choose(self, current: str | None, held_s: float, now: float) -> str | None:
        return next_expert(self._work(now), current, held_s, now, slice_s=self.opts.slice_s,
                           max_wait_s=self.opts.max_wait_s)

    # -- the worker (Scheduler._loop and _serve) --------------------------------------------
    def run(self) -> ReplayResult:
        if self.opts.start_tier == "host":
            self._start_in_host()
        t = 0.0
        while self._pending() or any(self.queues.values()) or any(self.live.values()):
            self.b.clock.advance_to(t)
            self.admit_until(t)
            if self.unrouted:
                t = self.route(t)
                continue
            expert = self._choose(None, 0.0, t)
            if expert is None:
                work = self._work(t)
                t = self._next_event(t, [(w.since, w.name, w.ready) for w in work if w.queued])
                self._retry_deferred(t)
                continue
            t = self._serve(expert, t)
        return self.result(t, [r for r in self.records if r is not None])

    def _serve(self, expert: str, t: float) -> float:
        """Step `expert`'s batch from `t` until another expert gets the device or nothing is
        left to run: the time then."""
        start = t
        ready_t, waited_from = self.acquire(expert, t)
        t = ready_t
        source, switch = (waited_from, ready_t - start) if waited_from is not None else ("device", 0.0)
        live = self.live.setdefault(expert, [])
        while True:
            self.admit_until(t)
            for queued_at, i in admit(self.queues.setdefault(expert, deque()), len(live), self.opts.max_batch,
                                      False, lambda _: False, self._reserve):
                live.append(self._join(expert, queued_at, i, t, source, switch, len(live) + 1))
            source, switch = "device", 0.0  # later joiners found it there
            if any(s.prefilled < s.prompt for s in live):
                t = self._step(expert, live, t)
            elif live:
                t = self._decode_run(expert, live, t, self._next_change(expert, start, t))
            self.stepped[expert] = t
            if self.unrouted or self._choose(expert, t - start, t) != expert:  # routing takes the compute
                break
        self.release(expert, t)
        return t

    def _join(self, expert: str, queued_at: float, i: int, now: float, source: str, switch: float,
              batch: int) -> _Seq:
        """A request joins the running batch, reporting its switch as the server does
        (decisions.reported_switch)."""
        r = self.reqs[i]
        source, switch = reported_switch(self.arrival_tier[i], source, switch, self._prefetched(expert, queued_at, now))
        return _Seq(i, queued_at, r.prompt_tokens, r.gen_tokens, self._kv_of(i), now, source, switch, batch)

    def _step(self, expert: str, live: list[_Seq], t: float) -> float:
        """One step (RealBatch.step): prefill chunks under the budget, then a token for each
        prefilled sequence; the finished leave and free their KV cache. The time after it."""
        budget, prefills, firsts = self.opts.prefill_chunk, [], []
        for s in live:
            if budget <= 0:
                break
            if s.prefilled < s.prompt:
                n = min(budget, s.prompt - s.prefilled)
                prefills.append((n, s.prefilled))
                s.prefilled += n
                budget -= n
                if s.prefilled == s.prompt:  # the prefill's last chunk yields the first token
                    s.made = 1
                    firsts.append(s)
        decoding = [s for s in live if s.prefilled == s.prompt and s.made < s.gen]
        cached = sum(s.prompt + s.made - 1 for s in decoding)  # the input token is not cached yet
        t = self._spend(self.b.step(expert, prefills, len(decoding), -(-cached // max(1, len(decoding)))), t)
        for s in decoding:
            s.made += 1
        for s in firsts:
            s.first_token_s = t
        self._retire(expert, live, t)
        return t

    def _decode_run(self, expert: str, live: list[_Seq], t: float, until: float) -> float:
        """Decode-only steps, from `t` until one sequence finishes or a step ends at or after
        `until` (when a decision may change): the same steps as one `_step` at a time, costed
        without rebuilding the scheduler's view between them. The time after the last."""
        rows, steps = len(live), 0
        cached = sum(s.prompt + s.made - 1 for s in live)
        left = min(s.gen - s.made for s in live)
        while steps < left and (steps == 0 or t < until):
            t = self._spend(self.b.step(expert, (), rows, -(-(cached + steps * rows) // rows)), t)
            steps += 1
        for s in live:
            s.made += steps
        self._retire(expert, live, t)
        return t

    def _next_change(self, expert: str, start: float, now: float) -> float:
        """The first time after `now` at which the decisions for `expert`'s batch (serving
        since `start`) may differ: an arrival, a load landing, its slice ending or another
        expert's work becoming overdue."""
        times = [u for u in self.loading_until.values() if u > now]
        if self.nxt < len(self.reqs):
            times.append(self.reqs[self.nxt].arrival_s)
        others = [w for w in self._work(now) if w.name != expert]
        if others:
            times.append(start + self.opts.slice_s)
            times += [w.since + self.opts.max_wait_s for w in others]
        return min(times, default=float("inf"))

    def _spend(self, cost, t: float) -> float:
        self.compute += cost.seconds
        self.hbm += cost.hbm_bytes
        return t + cost.seconds

    def _retire(self, expert: str, live: list[_Seq], t: float) -> None:
        """The finished leave the batch and free their KV cache."""
        for s in [s for s in live if s.first_token_s is not None and s.made >= s.gen]:
            live.remove(s)
            self.kv_used -= s.kv
            r = self.reqs[s.index]
            self.records[s.index] = RequestRecord(s.index, r.id, expert, r.arrival_s, s.start_s, s.first_token_s, t,
                                                  s.source_tier, s.switch_s, s.batch, s.prompt, s.gen)
