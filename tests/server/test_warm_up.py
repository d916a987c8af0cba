"""While the start-up warm-up prepares the decode steps, /ready answers 503 ("warming up") so a
load balancer or a script waits for it (/health says the server is alive); a request sent
meanwhile is accepted, queues behind the warm-up and is answered after it."""

from __future__ import annotations

import threading

import httpx

from coe_fixture import start
from coeflow.backend.real.batch import RealBatch


def test_ready_says_warming_up_until_the_warm_up_ends_then_draining_and_a_request_sent_meanwhile_is_answered(
        coe_file, monkeypatch):
    release, warming = threading.Event(), threading.Event()
    warm = RealBatch.warm

    def held_warm(self, resident, max_rows):  # a warm-up that lasts until the test lets it end
        warming.set()
        assert release.wait(60)
        return warm(self, resident, max_rows)

    monkeypatch.setattr(RealBatch, "warm", held_warm)
    srv, ctx = start(coe_file)
    srv.warm_up = ["general"]
    with ctx as url:
        base = url.removesuffix("/v1")
        assert warming.wait(60)
        r = httpx.get(f"{base}/ready")
        assert r.status_code == 503 and r.json()["status"] == "warming up"
        assert httpx.get(f"{base}/health").status_code == 200
        answer: dict = {}
        sender = threading.Thread(target=lambda: answer.update(r=httpx.post(
            f"{url}/completions", json={"model": "general", "prompt": "hello", "max_tokens": 3}, timeout=60)))
        sender.start()
        sender.join(0.5)
        assert sender.is_alive(), "a request was answered before the warm-up ended"
        release.set()
        sender.join(60)
        assert answer["r"].status_code == 200 and answer["r"].json()["choices"][0]["text"] is not None
        r = httpx.get(f"{base}/ready")
        assert r.status_code == 200 and r.json()["status"] == "ready"
        srv.scheduler.stop(drain_s=5)  # as on Ctrl-C: the server drains
        r = httpx.get(f"{base}/ready")
        assert r.status_code == 503 and r.json()["status"] == "draining"
