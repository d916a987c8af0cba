"""No request can hurt another: hostile input is refused alone and early, an abandoned request
stops, a failed expert is reported, routed around and repaired, and the server's own answers
are all in OpenAI's error shape."""

from __future__ import annotations

import json
import shutil
import threading
import time

import httpx
import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from coe_fixture import start, write_coe
from coeflow.errors import ConfigError
from coeflow.server import Limits, ServerOptions

pytestmark = pytest.mark.e2e


def _openai_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


def test_a_hostile_seed_is_refused_alone_and_its_batch_mates_get_their_own_answers(live, client):
    """A seed past torch's range once failed every request of its batch with a 500."""
    _, url = live
    texts = ["select * from users", "select id from orders", "count the rows", "join two tables"]

    def ask(text: str, seed: int):
        return client.chat.completions.create(model="sql", messages=[{"role": "user", "content": text}],
                                              max_tokens=8, temperature=1.0, seed=seed).choices[0].message.content
    alone = [ask(t, 7) for t in texts]
    together: dict[str, object] = {}
    threads = [threading.Thread(target=lambda t=t: together.__setitem__(t, ask(t, 7))) for t in texts]
    hostile = {"model": "sql", "messages": [{"role": "user", "content": "x"}], "temperature": 1.0, "seed": 2**64}
    for th in threads:
        th.start()
    r = httpx.post(f"{url}/chat/completions", json=hostile, timeout=60)
    for th in threads:
        th.join()
    assert _openai_error(r, 400)["param"] == "seed"
    assert [together[t] for t in texts] == alone


def test_bodies_past_the_limit_are_413_before_they_are_read(coe_file):
    srv, ctx = start(coe_file, limits=Limits(max_body_bytes=64 << 10))
    with ctx as url:
        body = {"model": "sql", "messages": [{"role": "user", "content": "x" * (1 << 20)}]}
        err = _openai_error(httpx.post(f"{url}/chat/completions", json=body, timeout=60), 413)
        assert "65536 bytes" in err["message"] and err["code"] == "request_too_large"

        def chunks():  # no Content-Length: the limit holds while reading
            for _ in range(64):
                yield b"x" * (16 << 10)
        r = httpx.post(f"{url}/completions", content=chunks(), headers={"content-type": "application/json"})
        _openai_error(r, 413)
        assert httpx.get(url.removesuffix("/v1") + "/health").json()["status"] == "ok"


def test_malformed_bodies_and_unknown_routes_get_openai_errors(live):
    _, url = live
    nested = b'{"model": "sql", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    err = _openai_error(httpx.post(f"{url}/chat/completions", content=nested,
                                   headers={"content-type": "application/json"}), 400)
    assert "nested too deeply" in err["message"]
    surrogate = b'{"model": "sql", "messages": [{"role": "user", "content": "a\\ud800b"}]}'
    err = _openai_error(httpx.post(f"{url}/chat/completions", content=surrogate,
                                   headers={"content-type": "application/json"}), 400)
    assert err["param"] == "messages[0].content" and "surrogate" in err["message"]
    assert "/v1/nothing" in _openai_error(httpx.get(f"{url}/nothing"), 404)["message"]
    assert "GET" in _openai_error(httpx.get(f"{url}/chat/completions"), 405)["message"]


def test_a_prompt_too_long_for_any_tokenization_is_refused_before_tokenizing(live, monkeypatch):
    srv, url = live
    tokenized = []
    tok = srv.runtimes["sql"].tokenizer
    encode_chat = tok.encode_chat
    monkeypatch.setattr(tok, "encode_chat", lambda *a: tokenized.append(1) or encode_chat(*a))
    longest = max(rt.tokenizer.max_token_chars for rt in srv.runtimes.values())
    text = "y" * (srv.opts.limits.max_prompt_tokens * longest + 1)
    r = httpx.post(f"{url}/chat/completions", json={"model": "sql", "messages": [{"role": "user", "content": text}]},
                   timeout=60)
    assert _openai_error(r, 400)["param"] == "messages" and tokenized == []
    r = httpx.post(f"{url}/chat/completions", timeout=60,
                   json={"model": "sql", "messages": [{"role": "user", "content": "ok"}], "max_tokens": 2})
    assert r.status_code == 200 and tokenized == [1]


def _outcomes(url: str, expert: str) -> dict[str, float]:
    text = httpx.get(url.removesuffix("/v1") + "/metrics").text
    return {s.labels["outcome"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == "coeflow_requests_total" and s.labels.get("expert") == expert}


def test_a_client_that_leaves_a_non_streamed_request_cancels_it(coe_file, monkeypatch):
    """The disconnect is seen while tokens keep coming, and the request is counted cancelled."""
    from coeflow.engine.runners.eager import EagerRunner
    step = EagerRunner.step
    monkeypatch.setattr(EagerRunner, "step", lambda *a: time.sleep(0.02) or step(*a))  # a slow expert
    srv, ctx = start(coe_file)
    with ctx as url:
        body = {"model": "shell", "prompt": "ls", "max_tokens": 400, "ignore_eos": True}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/completions", json=body, timeout=httpx.Timeout(60, read=1.5))
        deadline = time.monotonic() + 60  # a bound on waiting, not a timing under test
        while _outcomes(url, "shell").get("cancelled", 0) < 1:
            assert time.monotonic() < deadline, f"never cancelled: {_outcomes(url, 'shell')}"
            time.sleep(0.2)
        assert _outcomes(url, "shell").get("ok", 0) == 0


def test_a_failed_expert_is_reported_routed_around_and_repaired_by_a_load(tmp_path):
    coe = write_coe(tmp_path, broken="shell")
    weights = tmp_path / "experts" / "shell" / "model.safetensors"
    srv, ctx = start(coe)
    with ctx as url:
        health = httpx.get(url.removesuffix("/v1") + "/health").json()
        assert health["status"] == "degraded" and list(health["failed"]) == ["shell"]
        assert str(tmp_path) not in json.dumps(health), "the server's file system leaked"
        client = OpenAI(base_url=url, api_key="x", max_retries=0)
        prompt = "grep recursively for a word in bash"
        ranked = [e for e, _ in srv.router.route(prompt).candidates]
        assert ranked[0] == "shell"  # the router would send it to the broken expert
        r = client.chat.completions.with_raw_response.create(
            model="coe", messages=[{"role": "user", "content": prompt}], max_tokens=4)
        info = r.parse().model_extra["coeflow"]
        assert r.headers["x-coeflow-expert"] == ranked[1] and info["fell_back"]  # its next choice instead
        assert info["rerouted_from"] == ["shell"] and r.headers["x-coeflow-rerouted-from"] == "shell"
        make_good = write_coe(tmp_path / "good")  # the same seeds: shell's checkpoint as it should be
        shutil.copy(make_good.parent / "experts" / "shell" / "model.safetensors", weights)
        r = httpx.post(f"{url}/experts/shell/load", json={"tier": "device"}, timeout=60)
        assert r.status_code == 200 and r.json()["tier"] == "device" and r.json()["error"] is None
        assert client.chat.completions.create(model="shell", messages=[{"role": "user", "content": "ls"}],
                                              max_tokens=4).choices[0].message.content is not None
        assert httpx.get(url.removesuffix("/v1") + "/health").json()["status"] == "ok"


def test_an_expert_whose_tokenizer_was_missing_serves_after_a_load(tmp_path):
    coe = write_coe(tmp_path)
    tok = tmp_path / "experts" / "sql" / "tokenizer.json"
    saved = tok.read_bytes()
    tok.unlink()
    srv, ctx = start(coe)
    with ctx as url:
        client = OpenAI(base_url=url, api_key="x", max_retries=0)
        rows = {r["name"]: r for r in httpx.get(f"{url}/experts").json()["data"]}
        assert rows["sql"]["state"] == "failed" and "<sql>" in rows["sql"]["error"]
        assert httpx.post(f"{url}/experts/sql/load", json={}).status_code == 400  # still missing
        tok.write_bytes(saved)
        assert httpx.post(f"{url}/experts/sql/load", json={}).status_code == 200
        assert client.chat.completions.create(model="sql", messages=[{"role": "user", "content": "select"}],
                                              max_tokens=4).choices[0].message.content is not None


def test_a_pinned_expert_cannot_be_unloaded_and_an_empty_key_is_refused(live):
    _, url = live
    assert httpx.post(f"{url}/experts/sql/pin", json={"pinned": True}).status_code == 200
    try:
        err = _openai_error(httpx.post(f"{url}/experts/sql/unload", json={"tier": "disk"}), 400)
        assert "pinned" in err["message"]
    finally:
        httpx.post(f"{url}/experts/sql/pin", json={"pinned": False})
    with pytest.raises(ConfigError, match="empty API key"):
        ServerOptions(api_key="")


def test_shutdown_under_load_answers_every_client(coe_file, monkeypatch):
    """Stopping with a batch running and more queued: each client gets its whole answer, a 503,
    or an error event in its stream; no connection is dropped."""
    import coeflow.server as server_module
    from coeflow.engine.runners.eager import EagerRunner
    step = EagerRunner.step
    monkeypatch.setattr(EagerRunner, "step", lambda *a: time.sleep(0.02) or step(*a))  # a slow expert
    monkeypatch.setattr(server_module, "DRAIN_S", 1.0)
    monkeypatch.setattr(server_module, "GRACE_S", 4.0)
    srv, ctx = start(coe_file, max_batch=4)
    outcomes: list[str] = []

    def ask(i: int, url: str) -> None:
        body = {"model": "sql", "prompt": f"select {i}", "max_tokens": 300, "ignore_eos": True, "stream": i % 2 == 1}
        try:
            with httpx.stream("POST", f"{url}/completions", json=body, timeout=60) as r:
                text = r.read().decode()
            if r.status_code == 200 and body["stream"]:
                outcomes.append("error event" if '"error"' in text else "whole" if "[DONE]" in text else text)
            else:
                outcomes.append("whole" if r.status_code == 200 else str(r.json()["error"]["type"]))
        except httpx.HTTPError as e:
            outcomes.append(f"dropped: {type(e).__name__}")
    with ctx as url:
        threads = [threading.Thread(target=ask, args=(i, url)) for i in range(10)]
        for th in threads:
            th.start()
        deadline = time.monotonic() + 60  # a bound on waiting for every request to arrive, not a timing
        while not (srv.scheduler.running() and srv.scheduler.running() + srv.scheduler.queued() == 10):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    for th in threads:
        th.join(timeout=60)
    assert len(outcomes) == 10 and not [o for o in outcomes if o.startswith("dropped")], outcomes
    assert set(outcomes) <= {"whole", "error event", "service_unavailable"}, outcomes
    assert "whole" not in outcomes or outcomes.count("whole") < 10  # the drain's deadline cut some


def test_a_short_answer_is_sent_when_it_ends_not_when_its_batch_ends(coe_file, monkeypatch):
    """A long request in the same batch no longer holds back a short one's answer."""
    from coeflow.engine.runners.eager import EagerRunner
    step = EagerRunner.step
    monkeypatch.setattr(EagerRunner, "step", lambda *a: time.sleep(0.02) or step(*a))  # a slow expert
    srv, ctx = start(coe_file)
    with ctx as url:
        srv.scheduler.store.acquire("sql").release()  # resident
        gate, choose = threading.Event(), srv.scheduler._choose
        monkeypatch.setattr(srv.scheduler, "_choose", lambda *a: choose(*a) if gate.is_set() else None)
        finished: list[str] = []

        def ask(name: str, max_tokens: int) -> None:
            r = httpx.post(f"{url}/completions", timeout=60, json={
                "model": "sql", "prompt": "select", "max_tokens": max_tokens, "ignore_eos": True})
            assert r.status_code == 200
            finished.append((name, bool(srv.scheduler.running())))  # was the batch still running?
        long = threading.Thread(target=ask, args=("long", 200))
        short = threading.Thread(target=ask, args=("short", 4))
        long.start()
        short.start()
        deadline = time.monotonic() + 60  # a bound on waiting, not a timing under test
        while srv.scheduler.queued("sql") < 2:  # both queued before the worker looks: one batch
            assert time.monotonic() < deadline
            time.sleep(0.02)
        gate.set()
        short.join(timeout=60)
        long.join(timeout=60)
    assert finished == [("short", True), ("long", False)]
