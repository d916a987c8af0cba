"""The scheduler keeps resident experts serving while another expert loads, and the
starvation bound sends a long-waiting request first even if its expert is not loaded."""

from __future__ import annotations

import threading
from concurrent.futures import Future

from coeflow.engine import SamplingParams
from coeflow.scheduler import Failed, Finished, GenRequest, Scheduler
from coeflow.server import ServerOptions, build_server


class HeldStore:
    """The real store, except that prefetching `held` returns a load we finish by hand."""

    def __init__(self, store, held: str):
        self.store, self.held, self.gate = store, held, Future()

    def prefetch(self, name, tier="device"):
        return self.gate if name == self.held else self.store.prefetch(name, tier)

    def acquire(self, name, timeout=None):
        return self.store.acquire(name, timeout)

    def tier_of(self, name):
        return self.store.tier_of(name)


def run_two(coe_file, max_wait_s: float) -> list[str]:
    """Submit a request for `sql` (held loading) and then one for `shell`; the order they finish."""
    srv = build_server(coe_file, ServerOptions(fused=False, warm_up=False))
    store = HeldStore(srv.store, "sql")
    sched = Scheduler(store, srv.scheduler.backend, list(srv.runtimes), max_wait_s=max_wait_s)
    order: list[str] = []
    done = {n: threading.Event() for n in ("sql", "shell")}

    def sink_for(name):
        def sink(ev):
            if isinstance(ev, (Finished, Failed)):
                order.append(name)
                done[name].set()
        return sink
    sched.start()
    try:
        for name in ("sql", "shell"):
            sched.submit(GenRequest(name, [1, 5, 6], SamplingParams(max_tokens=3, ignore_eos=True), sink_for(name)))
        if max_wait_s > 0:
            assert done["shell"].wait(120), "a resident expert's request waited behind a loading one"
            assert not done["sql"].is_set()
            store.gate.set_result(None)  # the held load completes
        assert done["sql"].wait(120) and done["shell"].wait(120)
    finally:
        if not store.gate.done():
            store.gate.set_result(None)
        sched.stop(drain_s=5)
        srv.store.close()
    return order


def test_resident_expert_serves_while_another_loads(coe_file):
    assert run_two(coe_file, max_wait_s=3600) == ["shell", "sql"]


def test_request_past_the_wait_bound_goes_first_even_while_loading(coe_file):
    # max_wait 0: the oldest request (sql) runs first; its acquire loads the expert itself
    assert run_two(coe_file, max_wait_s=0) == ["sql", "shell"]
