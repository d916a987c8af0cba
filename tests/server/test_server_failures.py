"""A broken expert answers 503 and takes nobody down; the API key guards every /v1 route;
shutdown answers what it cannot run."""

from __future__ import annotations

import threading

import httpx
import openai
import pytest
from openai import OpenAI

from coe_fixture import start, write_coe
from coeflow.engine import SamplingParams
from coeflow.scheduler import Failed, Finished, GenRequest, QueueFullError, ShuttingDownError

pytestmark = pytest.mark.e2e


def chat(client, model, text="hello"):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}],
                                          max_tokens=4, temperature=0)


def test_broken_expert_is_503_and_the_others_serve(tmp_path):
    srv, ctx = start(write_coe(tmp_path, broken="shell"))
    with ctx as url:
        client = OpenAI(base_url=url, api_key="x", max_retries=0)
        for _ in range(2):  # and again: the failure is sticky, the server stays up
            with pytest.raises(openai.InternalServerError) as e:
                chat(client, "shell")
            assert e.value.status_code == 503 and "shell" in str(e.value)
            assert chat(client, "sql").choices[0].message.content is not None
        rows = {r["name"]: r for r in httpx.get(f"{url}/experts").json()["data"]}
        assert rows["shell"]["error"] and "truncated" in rows["shell"]["error"]
        assert not rows["sql"]["error"]


def test_api_key_guards_v1_routes(coe_file):
    srv, ctx = start(coe_file, api_key="s3cret")
    with ctx as url:
        with pytest.raises(openai.AuthenticationError):
            chat(OpenAI(base_url=url, api_key="wrong", max_retries=0), "sql")
        assert chat(OpenAI(base_url=url, api_key="s3cret", max_retries=0), "sql").choices
        assert httpx.post(f"{url}/experts/sql/pin", json={"pinned": True}).status_code == 401
        assert httpx.post(f"{url}/experts/sql/pin", json={"pinned": True},
                          headers={"authorization": "Bearer s3cret"}).status_code == 200


def test_scheduler_bounds_queue_and_fails_queued_work_on_shutdown(coe_file):
    srv, _ = start(coe_file, max_queue=2)  # built, never started: nothing is served
    sched = srv.scheduler
    results: list[object] = []
    done = threading.Event()

    def sink(ev):
        if isinstance(ev, (Finished, Failed)):
            results.append(ev)
            if len(results) == 2:
                done.set()
    for _ in range(2):
        sched.submit(GenRequest("sql", [1, 5], SamplingParams(max_tokens=2), sink))
    with pytest.raises(QueueFullError):
        sched.submit(GenRequest("sql", [1, 5], SamplingParams(max_tokens=2), sink))
    sched.stop(drain_s=0)
    assert done.is_set() and all(isinstance(r, Failed) for r in results)
    with pytest.raises(ShuttingDownError):
        sched.submit(GenRequest("sql", [1, 5], SamplingParams(max_tokens=2), sink))
    srv.store.close()
