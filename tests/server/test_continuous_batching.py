"""The scheduler batches continuously across experts: a request joins its expert's running
batch between two steps, another expert's request gets the device before a long batch ends,
every request gets the greedy tokens it gets alone, a full KV cache makes requests wait (never
fail), and cancelled requests give their blocks back at once. `static` keeps run-to-completion
batching for the benchmark's comparison."""

from __future__ import annotations

import threading
import time

import pytest

from coeflow.engine import SamplingParams
from coeflow.scheduler import Failed, Finished, GenRequest
from coeflow.server import ServerOptions, build_server

pytestmark = pytest.mark.slow


class Log:
    """Every request's events, and the order in which requests ended."""

    def __init__(self) -> None:
        self.events: dict[str, list] = {}
        self.ended: list[str] = []
        self.done: dict[str, threading.Event] = {}
        self.lock = threading.Lock()

    def request(self, name: str, expert: str, prompt: list[int], n: int) -> GenRequest:
        self.events[name], self.done[name] = [], threading.Event()

        def sink(ev) -> None:
            with self.lock:
                self.events[name].append(ev)
                if isinstance(ev, (Finished, Failed)):
                    self.ended.append(name)
                    self.done[name].set()
        return GenRequest(expert, prompt, SamplingParams(max_tokens=n, ignore_eos=True), sink)

    def tokens(self, name: str) -> list[int]:
        return [e.token_id for e in self.events[name] if hasattr(e, "token_id")]

    def wait(self, *names: str) -> None:
        for n in names:
            assert self.done[n].wait(120), f"{n} never ended"


def _server(coe_file, monkeypatch, **opts):
    from coeflow.engine.runners.eager import EagerRunner
    step = EagerRunner.step
    monkeypatch.setattr(EagerRunner, "step", lambda *a: time.sleep(0.01) or step(*a))  # a slow expert
    srv = build_server(coe_file, ServerOptions(fused=False, warm_up=False, **opts))
    srv.scheduler.start()
    return srv


def _stop(srv) -> None:
    srv.scheduler.stop(drain_s=5)
    srv.store.close()


def _alone(srv, log: Log, expert: str, prompt: list[int], n: int) -> list[int]:
    name = f"alone-{len(log.events)}"
    srv.scheduler.submit(log.request(name, expert, prompt, n))
    log.wait(name)
    return log.tokens(name)


def _started_long(srv, log: Log) -> None:
    srv.scheduler.submit(log.request("long", "sql", [1, 40, 41, 42], 150))
    deadline = time.monotonic() + 60  # a bound on waiting, not a timing under test
    while len(log.tokens("long")) < 5:
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.mark.parametrize("schedule", ["continuous", "static"])
def test_requests_join_a_running_batch_and_other_experts_get_the_device(coe_file, monkeypatch, schedule):
    srv = _server(coe_file, monkeypatch, schedule=schedule)
    log = Log()
    try:
        _started_long(srv, log)
        srv.scheduler.submit(log.request("same", "sql", [1, 7, 8], 4))
        srv.scheduler.submit(log.request("other", "shell", [1, 9, 10, 11, 12], 4))
        log.wait("long", "same", "other")
        if schedule == "continuous":
            assert log.ended[0] in ("same", "other") and log.ended[-1] == "long", log.ended
        else:  # run to completion: both wait for the long batch
            assert log.ended[0] == "long", log.ended
        got = {n: log.tokens(n) for n in ("long", "same", "other")}
        assert got["long"] == _alone(srv, log, "sql", [1, 40, 41, 42], 150)
        assert got["same"] == _alone(srv, log, "sql", [1, 7, 8], 4)
        assert got["other"] == _alone(srv, log, "shell", [1, 9, 10, 11, 12], 4)
        assert all(isinstance(log.events[n][-1], Finished) for n in got)
    finally:
        _stop(srv)


def test_a_full_kv_cache_makes_requests_wait_and_none_fails(coe_file, monkeypatch):
    """A cache of 12 blocks (192 tokens) holds two of these requests at a time (5 blocks
    each, with one for padding): the rest wait for room and all complete."""
    from coeflow.engine.paged import KVPool
    from coeflow.model import ModelConfig
    cfg = ModelConfig.from_dir(coe_file.parent / "experts" / "sql")
    srv = _server(coe_file, monkeypatch, kv_mem=12 * KVPool.bytes_per_block(cfg, __import__("torch").float32))
    log = Log()
    try:
        pool = srv.scheduler.backend.batch("sql").engine.pool
        free = pool.free_blocks
        names = [f"r{i}" for i in range(6)]
        for i, n in enumerate(names):
            srv.scheduler.submit(log.request(n, ("sql", "shell")[i % 2], [1, 20 + i, 30], 70))
        log.wait(*names)
        assert all(isinstance(log.events[n][-1], Finished) and len(log.tokens(n)) == 70 for n in names)
        assert pool.free_blocks == free
        huge = log.request("huge", "sql", [1] * 100, 150)  # 16 blocks: more than the cache holds
        with pytest.raises(Exception, match="longer than the KV pool"):
            srv.scheduler.submit(huge)
    finally:
        _stop(srv)


def test_cancelled_requests_give_their_blocks_back_at_once(coe_file, monkeypatch):
    """A burst of requests with long prompts, prefilled 8 tokens a step, cancelled while
    they prefill or decode: afterwards the cache has every block it had before."""
    srv = _server(coe_file, monkeypatch, prefill_chunk=8)
    log = Log()
    try:
        pool = srv.scheduler.backend.batch("sql").engine.pool
        free = pool.free_blocks
        reqs = [log.request(f"c{i}", "sql", [1] + list(range(20, 20 + 60 + i)), 100) for i in range(8)]
        for r in reqs:
            srv.scheduler.submit(r)
        deadline = time.monotonic() + 60
        while srv.scheduler.running() == 0:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        for r in reqs:
            r.cancelled.set()
        log.wait(*(f"c{i}" for i in range(8)))
        assert all(isinstance(log.events[f"c{i}"][-1], Finished) and log.events[f"c{i}"][-1].reason == "cancelled"
                   for i in range(8))
        assert pool.free_blocks == free
    finally:
        _stop(srv)


def test_a_request_longer_than_the_kv_cache_could_hold_is_a_400(coe_file):
    """Refused at the door, naming the limit, and the server goes on serving."""
    import httpx
    import torch

    from coe_fixture import start
    from coeflow.engine.paged import KVPool
    from coeflow.model import ModelConfig
    cfg = ModelConfig.from_dir(coe_file.parent / "experts" / "sql")
    srv, ctx = start(coe_file, kv_mem=6 * KVPool.bytes_per_block(cfg, torch.float32))  # 80 positions
    with ctx as url:
        r = httpx.post(f"{url}/completions", timeout=60,
                       json={"model": "sql", "prompt": "select", "max_tokens": 100, "ignore_eos": True})
        assert r.status_code == 400 and "KV pool" in r.json()["error"]["message"]
        assert r.json()["error"]["param"] == "max_tokens"
        ok = httpx.post(f"{url}/completions", timeout=60,
                        json={"model": "sql", "prompt": "select", "max_tokens": 8, "ignore_eos": True})
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 8
