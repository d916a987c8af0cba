"""The store and the scheduler use the backend interface only: on a backend that holds no
tensors and keeps its own clock, they make the moves and run the batches through it, and
every time they report comes from that clock. Neither module imports PyTorch."""

from __future__ import annotations

import subprocess
import sys
import threading
from types import SimpleNamespace

import pytest
from fakes import MB, FakeBackend, fake_coe

from coeflow.scheduler import Failed, Finished, GenRequest, Scheduler, Started
from coeflow.store import ExpertStore, ExpertUnavailableError


def test_store_moves_through_the_backend_and_times_on_its_clock(tmp_path):
    b = FakeBackend({"a": 2, "b": 3, "c": 2})
    with ExpertStore(fake_coe(tmp_path, ["a", "b", "c"]), b, device_mem=3 * MB, host_mem=5 * MB) as store:
        assert b.reserved == (5 * MB, 3 * MB)
        with store.acquire("a") as lease:
            assert lease.source_tier == "disk"
            assert lease.switch_s == pytest.approx(2 + 2)  # disk -> host, host -> device: 1 s per MB each
            assert lease.weights == {"expert": "a", "tier": "device", "slot": 0}  # what the backend's move returned
        assert b.moves == [("a", "disk", "host", 0), ("a", "host", "device", 0)]
        with store.acquire("b"):  # b (3 MB) needs the whole device tier: a leaves it, keeps its host copy
            pass
        with store.acquire("a") as again:
            assert again.source_tier == "host" and again.switch_s == pytest.approx(2)
        assert [m[:3] for m in b.moves[2:]] == [("b", "disk", "host"), ("b", "host", "device"),
                                                ("a", "host", "device")]
        st = {s.name: s for s in store.status()}
        assert st["a"].last_used == b.clock.now()  # last use is on the backend's clock


def test_a_load_that_pinned_experts_block_is_refused_and_evicts_nothing(tmp_path):
    b = FakeBackend({"a": 2, "b": 1, "c": 3})
    with ExpertStore(fake_coe(tmp_path, ["a", "b", "c"]), b, device_mem=4 * MB, host_mem=6 * MB) as store:
        store.pin("a")
        store.prefetch("a").result()
        with store.acquire("b"):
            pass
        # c (3 MB) would need b's 1 MB and 2 MB that pinned a holds: b is not evicted in vain
        with pytest.raises(ExpertUnavailableError, match="held by pinned experts"):
            store.acquire("c")
        assert {s.name: s.tier for s in store.status()} == {"a": "device", "b": "device", "c": "host"}


def test_a_checkpoint_the_backend_cannot_plan_fails_alone(tmp_path):
    b = FakeBackend({"a": 1, "b": 1}, broken=("b",))
    with ExpertStore(fake_coe(tmp_path, ["a", "b"]), b, device_mem=None, host_mem=None) as store:
        with pytest.raises(ExpertUnavailableError, match="truncated"):
            store.acquire("b")
        with store.acquire("a") as lease:
            assert lease.weights == {"expert": "a", "tier": "device", "slot": 0}


def test_scheduler_runs_batches_on_the_backend_and_stamps_arrivals_with_its_clock(tmp_path):
    b = FakeBackend({"a": 1, "b": 1})
    store = ExpertStore(fake_coe(tmp_path, ["a", "b"]), b, device_mem=None, host_mem=None)
    sched = Scheduler(store, b, ["a", "b"])
    events: dict[str, list] = {"a": [], "b": []}
    done = threading.Event()

    def sink(name):
        def put(ev):
            events[name].append(ev)
            if all(evs and isinstance(evs[-1], (Finished, Failed)) for evs in events.values()):
                done.set()
        return put
    sched.start()
    try:
        reqs = {n: GenRequest(n, [1, 2, 3], SimpleNamespace(max_tokens=3), sink(n)) for n in ("a", "b")}
        for r in reqs.values():
            sched.submit(r)
        assert done.wait(30)
    finally:
        sched.stop(drain_s=5)
        store.close()
    for n, evs in events.items():
        assert isinstance(evs[0], Started) and evs[0].expert == n
        assert [e.text for e in evs[1:-1]] == ["x", "x", "x"]
        assert isinstance(evs[-1], Finished) and (evs[-1].reason, evs[-1].completion_tokens) == ("length", 3)
        assert reqs[n].arrival is not None and reqs[n].arrival >= 100.0  # the backend's clock, not the epoch
    # each step ran on the weights the backend's host -> device move produced for its expert
    assert sorted({(x[0], x[1]["expert"], x[1]["tier"]) for x in b.steps}) == [("a", "a", "device"),
                                                                              ("b", "b", "device")]


def test_store_and_scheduler_do_not_import_torch():
    code = "import sys, coeflow.store, coeflow.scheduler; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("modules", ["coeflow.store, coeflow.scheduler",
                                     "coeflow.hw, coeflow.hw.probed",
                                     "coeflow.sim.replay, coeflow.sim.workload, coeflow.sim.paper"])
def test_the_pure_rooms_import_neither_the_real_backend_nor_the_engine_nor_the_benches(modules):
    """The store never builds a backend; the hardware model and the modelled half run
    without PyTorch, so `coeflow simulate` works where torch is not wanted."""
    code = (f"import sys, {modules}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch' "
            "or m.startswith(('coeflow.backend.real', 'coeflow.engine', 'coeflow.bench'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_warm_up_prepares_each_experts_step_shapes_on_the_worker_before_traffic(tmp_path):
    """Warm-up runs on the worker, on each named expert's own weights, for batches up to
    max_batch, before the requests queued behind it; unknown experts are refused before
    anything is queued."""
    b = FakeBackend({"a": 1, "b": 1})
    store = ExpertStore(fake_coe(tmp_path, ["a", "b"]), b, device_mem=None, host_mem=None)
    sched = Scheduler(store, b, ["a", "b"], max_batch=3)
    order = []
    sched.warm_up(["a", "b"], wait=False)  # queued before the worker starts, as the server does
    assert sched.warming_up
    sched.submit(GenRequest("a", [1], SimpleNamespace(max_tokens=1), lambda ev: order.append(type(ev).__name__)))
    sched.start()
    try:
        sched.warm_up(["b"])
        assert not sched.warming_up
        with pytest.raises(KeyError, match="zz"):
            sched.submit_all([GenRequest("a", [1], SimpleNamespace(max_tokens=1), lambda ev: None),
                              GenRequest("zz", [1], SimpleNamespace(max_tokens=1), lambda ev: None)])
        assert sched.queued() == 0
    finally:
        sched.stop(drain_s=5)
        store.close()
    assert b.warmed == [("a", "a", 3), ("b", "b", 3), ("b", "b", 3)]
    assert order[-1] == "Finished" and len(b.steps) == 1  # the request ran, after the first warm-up


def test_default_device_budget_is_asked_for_what_the_host_tier_can_hold(tmp_path):
    """A host budget larger than every expert must not enlarge the device tier (on CUDA that
    would reserve a slab the KV caches need)."""
    b = FakeBackend({"a": 2, "b": 3})
    with ExpertStore(fake_coe(tmp_path, ["a", "b"]), b, device_mem=None, host_mem=100 * MB) as store:
        assert store.budgets == {"host": 100 * MB, "device": 5 * MB}
    b = FakeBackend({"a": 2, "b": 3})
    with ExpertStore(fake_coe(tmp_path / "small", ["a", "b"]), b, device_mem=None, host_mem=4 * MB) as store:
        assert store.budgets == {"host": 4 * MB, "device": 4 * MB}
