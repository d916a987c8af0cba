"""The CoE on Ray Serve, where it differs from one process: /v1/experts saying which replica and
node hold an expert; a replica killed, or a whole worker node lost, under load losing no request
that had not started, ending the one in flight with an error event, and healing by itself; a
pinned expert placed at start-up; a broken expert answering 503 while the others serve; a Serve
config file deployed with `serve deploy` and its queue limit changed without a restart."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import httpx
import openai
import pytest
import yaml

from coe_fixture import OnRay, write_coe

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _client(url: str):
    return openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)


def _where(url: str, expert: str) -> list[dict]:
    row = next(r for r in httpx.get(f"{url}/experts", timeout=30).json()["data"] if r["name"] == expert)
    return row["replicas"]


def test_experts_say_which_replica_and_node_hold_them(on_ray):
    _, url = on_ray
    client = _client(url)
    client.chat.completions.create(model="shell", messages=[{"role": "user", "content": "ls"}], max_tokens=2)
    replicas = _where(url, "shell")
    assert len(replicas) == 2 and len({r["node"] for r in replicas}) == 2  # one replica a worker node
    assert sorted(r["tier"] for r in replicas)[0] == "device"  # the replica that served it holds it


def _eventually(check: Callable[[], bool], seconds: float, every: float = 1.0) -> bool:
    """Whether `check()` comes to hold within `seconds` (asked every `every` seconds)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


def _under_load(url: str, lose: Callable[[dict], None]) -> dict[int, str]:
    """Four streamed requests for "general" (one decoding, the others queued behind it: the
    replicas decode one sequence at a time), and `lose(row)` once the first token has come, `row`
    being the replica that holds "general" (/v1/experts). Each request's outcome: "ok N" (N
    tokens) or "error MESSAGE"; fails if any hangs."""
    client = _client(url)
    outcomes: dict[int, str] = {}
    first_token = threading.Event()

    def ask(i: int) -> None:
        try:
            n = 0
            for chunk in client.chat.completions.create(
                    model="general", messages=[{"role": "user", "content": f"a story {i}"}], max_tokens=250,
                    stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True}):
                first_token.set()
                if chunk.usage is not None:
                    n = chunk.usage.completion_tokens
            outcomes[i] = f"ok {n}"
        except openai.APIError as e:
            outcomes[i] = f"error {e.message}"

    threads = [threading.Thread(target=ask, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    assert first_token.wait(60)
    lose(next(r for r in _where(url, "general") if r["tier"] == "device"))
    for t in threads:
        t.join(150)
    assert not any(t.is_alive() for t in threads), "a request hung after its replica was lost"
    return outcomes


def _heals(url: str, lost_replica: str) -> None:
    """Ray Serve starts a replica in the lost one's place; "general" is served again without
    anyone's help, not by the lost replica."""
    from ray import serve
    assert _eventually(lambda: serve.status().applications["coeflow"].deployments["Experts"]
                       .replica_states.get("RUNNING", 0) == 2, 150)
    r = _client(url).chat.completions.create(model="general", messages=[{"role": "user", "content": "again"}],
                                             max_tokens=4)
    assert r.choices[0].finish_reason in ("stop", "length")
    assert lost_replica not in {x["replica"] for x in _where(url, "general")}


def _check(outcomes: dict[int, str]) -> None:
    """Nothing lost: at most the request that was decoding on the lost replica ends with an
    error (in the OpenAI shape, saying so); the others complete in full."""
    errors = [o for o in outcomes.values() if o.startswith("error")]
    assert len(outcomes) == 4 and len(errors) <= 1, outcomes
    assert all(o == "ok 250" for o in outcomes.values() if not o.startswith("error")), outcomes
    assert all("replica" in e and "lost" in e for e in errors), errors


def test_a_killed_replica_loses_no_queued_request_and_heals(on_ray):
    import ray
    _, url = on_ray
    lost: dict = {}

    def kill(row: dict) -> None:
        lost.update(row)
        ray.kill(ray.get_actor(row["actor"], namespace="serve"))
    _check(_under_load(url, kill))
    _heals(url, lost["replica"])


def test_a_pinned_expert_is_placed_at_start_and_a_broken_one_is_503_while_the_others_serve(tmp_path, ray_cluster):
    coe = write_coe(tmp_path, broken="shell", pinned="sql")
    with OnRay(coe, ray_cluster.port, replicas=1, replica_cpus=0.25, app="broken") as url:
        # before any request: the replica's store loads its pinned expert
        assert _eventually(lambda: [r["tier"] for r in _where(url, "sql")] == ["device"], 60, 0.5)
        assert [r["tier"] for r in _where(url, "general")] == ["disk"]  # not pinned: loaded when asked for
        client = _client(url)
        for _ in range(2):  # and again: the failure is sticky, the deployment stays up
            with pytest.raises(openai.InternalServerError) as e:
                client.chat.completions.create(model="shell", messages=[{"role": "user", "content": "ls"}],
                                               max_tokens=4)
            assert e.value.status_code == 503 and "shell" in str(e.value)
            r = client.chat.completions.create(model="sql", messages=[{"role": "user", "content": "select"}],
                                               max_tokens=4)
            assert r.choices[0].finish_reason in ("stop", "length")
        rows = {r["name"]: r for r in httpx.get(f"{url}/experts", timeout=30).json()["data"]}
        assert rows["shell"]["state"] == "failed" and "truncated" in rows["shell"]["error"]
        assert rows["sql"]["state"] == "ready" and not rows["sql"]["error"]


def test_a_serve_config_deploys_the_coe_and_a_new_queue_limit_reconfigures_its_replica(tmp_path, coe_file,
                                                                                      ray_cluster):
    """The Serve config file docs/server.md shows, sent with Ray's own `serve deploy`, as a user
    would: the CoE answers under its route; deployed again with the expert deployment's
    `user_config: {max_queue: 1}`, the same replica (not restarted) refuses a request for two
    choices (two sequences to queue) with a 429."""
    from ray import serve

    from coeflow.cluster.deploy import shutdown
    url = f"http://127.0.0.1:{ray_cluster.port}/deployed/v1"

    def deploy(**experts) -> None:
        config = {"applications": [{
            "name": "deployed", "route_prefix": "/deployed", "import_path": "coeflow.cluster.deploy:build",
            "args": {"coe": str(coe_file), "replicas": 1, "replica_cpus": 0.25, "fused": False, "warm_up": False},
            **({"deployments": [{"name": "Experts", **experts}]} if experts else {})}]}
        path = tmp_path / "serve.yaml"
        path.write_text(yaml.safe_dump(config))
        done = subprocess.run([str(Path(sys.executable).with_name("serve")), "deploy", str(path),
                               "--address", ray_cluster.dashboard], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]

    def answer() -> int:
        r = httpx.post(f"{url}/chat/completions", timeout=60, json={
            "model": "sql", "messages": [{"role": "user", "content": "select"}], "max_tokens": 2, "n": 2})
        return r.status_code

    try:
        deploy()
        assert _eventually(lambda: getattr(serve.status().applications.get("deployed"), "status", None) == "RUNNING",
                           120)
        assert answer() == 200
        replica = [r["replica"] for r in _where(url, "sql")]
        deploy(user_config={"max_queue": 1})
        assert _eventually(lambda: answer() == 429, 60)
        assert [r["replica"] for r in _where(url, "sql")] == replica
    finally:
        shutdown("deployed")


def test_a_lost_node_loses_no_queued_request_and_its_replica_moves_to_another(on_ray, ray_cluster):
    """Last here: it takes a worker node away from the session's cluster (the third is spare)."""
    _, url = on_ray
    lost: dict = {}

    def lose_node(row: dict) -> None:
        lost.update(row)
        node = next((n for n in ray_cluster.cluster.worker_nodes if n.node_id == row["node"]), None)
        assert node is not None, f"the replica holding general is on no worker node: {row}"
        ray_cluster.cluster.remove_node(node, allow_graceful=False)
    _check(_under_load(url, lose_node))
    _heals(url, lost["replica"])
    assert lost["node"] not in {x["node"] for x in _where(url, "general")}
