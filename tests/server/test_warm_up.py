"""While the start-up warm-up prepares the decode steps, /health answers 503 ("warming up") so a
load balancer or a script waits for it; a request sent meanwhile is accepted, queues behind the
warm-up and is answered after it."""

from __future__ import annotations

import threading

import httpx

from coe_fixture import start
from coeflow.backend.real.batch import RealBatch


def test_health_says_warming_up_until_the_warm_up_ends_and_a_request_sent_meanwhile_is_answered(
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
        r = httpx.get(f"{base}/health")
        assert r.status_code == 503 and r.json()["status"] == "warming up"
        answer: dict = {}
        sender = threading.Thread(target=lambda: answer.update(r=httpx.post(
            f"{url}/completions", json={"model": "general", "prompt": "hello", "max_tokens": 3}, timeout=60)))
        sender.start()
        sender.join(0.5)
        assert sender.is_alive(), "a request was answered before the warm-up ended"
        release.set()
        sender.join(60)
        assert answer["r"].status_code == 200 and answer["r"].json()["choices"][0]["text"] is not None
        r = httpx.get(f"{base}/health")
        assert r.status_code == 200 and r.json()["status"] == "ok"
