"""An expert's running sequences on its shape's engine: the real backend's ExpertBatch.

Jobs (the scheduler's GenRequests) join between steps; a step prefills up to a budget of
prompt tokens of those that joined, in order (a prefix an earlier prompt of the expert
computed is reused, not prefilled), then decodes every prefilled one a token. Decoding runs
through one `Engine.decode` iterator while the set of decoding sequences stays the same, so
a runner that works ahead (greedy a step ahead on a GPU) keeps doing so; a join, a leave or
a pause closes it and the next step opens another."""

from __future__ import annotations

from typing import Any, Iterator

from coeflow.engine import Delta, Engine, Sequence


class RealBatch:
    def __init__(self, expert: str, engine: Engine, runtime: Any, prefix_cache: bool = True) -> None:
        self.expert, self.engine, self.runtime = expert, engine, runtime
        self.prefix = expert if prefix_cache else None  # the prefix cache's key: the expert's weights
        self._seqs: dict[int, tuple[Any, Sequence]] = {}  # by the sequence's index
        self._next = 0
        self._decoding: Iterator[list[Delta]] | None = None

    @property
    def live(self) -> list[Any]:
        return [job for job, _ in self._seqs.values()]

    def check(self, job: Any) -> None:
        self.engine.check(job.prompt_ids, job.params)

    def fits(self, job: Any) -> bool:
        return self.engine.blocks_needed(job.prompt_ids, job.params) <= self.engine.pool.free_blocks

    def admit(self, job: Any) -> None:
        seq = self.engine.open(job.prompt_ids, job.params, self.runtime.eos_ids, self.runtime.tokenizer.decode,
                               index=self._next, prefix=self.prefix, constraint=getattr(job, "constraint", None))
        self._seqs[self._next] = (job, seq)
        self._next += 1

    def step(self, resident: Any, prefill_budget: int) -> list[tuple[Any, Delta]]:
        self.engine.set_weights(resident.weights, name=self.expert)
        out: list[tuple[Any, Delta]] = []
        for job, seq in self._seqs.values():
            if prefill_budget <= 0:
                break
            if seq.done or seq.prefilled == len(seq.prompt):
                continue
            before = seq.prefilled
            d = self.engine.prefill(seq, prefill_budget)
            prefill_budget -= seq.prefilled - before
            if d is not None:
                out.append((job, d))
                self.pause()  # a sequence joins the decoding ones
        decoding = [s for s in self._by_index() if s.decoding]
        if decoding:
            if self._decoding is None:
                self._decoding = self.engine.decode(decoding, max(s.steps_left for s in decoding))
            deltas = next(self._decoding, None)
            if deltas is None:
                self.pause()
            else:
                out += [(self._seqs[d.index][0], d) for d in deltas]
        return out

    def warm(self, resident: Any, max_rows: int) -> int:
        """Compile (or build) every decode step shape up to `max_rows` rows, on the expert's
        weights: see Engine.warm."""
        self.pause()
        self.engine.set_weights(resident.weights, name=self.expert)
        return self.engine.warm(max_rows)

    def _by_index(self) -> list[Sequence]:
        return [seq for _, seq in self._seqs.values()]

    def cancel(self, job: Any) -> None:
        for j, seq in self._seqs.values():
            if j is job:
                seq.cancel()

    def leave(self, job: Any) -> None:
        for i, (j, seq) in list(self._seqs.items()):
            if j is job:
                self.pause()
                self.engine.close(seq)
                del self._seqs[i]

    def pause(self) -> None:
        if self._decoding is not None:
            self._decoding.close()
            self._decoding = None
