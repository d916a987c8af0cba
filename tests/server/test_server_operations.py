"""What a deployer expects around the OpenAI routes: an admin key apart from the inference key,
the API key guarding /metrics and the docs too (the probes stay open), a request id echoed and
logged, CORS only for the origins named, and a chat template's refusal as a 400 naming the
expert."""

from __future__ import annotations

import json
import logging
import shutil

import httpx
import pytest

from coe_fixture import start

API, ADMIN = "inference-key", "admin-key"


def _bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def keyed(coe_file):
    srv, ctx = start(coe_file, api_key=API, admin_key=ADMIN)
    with ctx as url:
        yield url.removesuffix("/v1")


def test_the_probes_are_open_and_everything_else_needs_the_api_key(keyed):
    for path in ("/health", "/ready"):
        assert httpx.get(keyed + path).status_code == 200, path
    for path in ("/metrics", "/openapi.json", "/docs", "/v1/models", "/v1/experts"):
        r = httpx.get(keyed + path)
        assert r.status_code == 401 and "API key" in r.json()["error"]["message"], path
        assert httpx.get(keyed + path, headers=_bearer(API)).status_code == 200, path


def test_admin_actions_need_the_admin_key_which_opens_the_other_routes_too(keyed):
    pin = f"{keyed}/v1/experts/sql/pin"
    r = httpx.post(pin, json={"pinned": False}, headers=_bearer(API))
    assert r.status_code == 401 and "admin key" in r.json()["error"]["message"]
    assert httpx.post(pin, json={"pinned": False}, headers=_bearer(ADMIN)).status_code == 200
    assert httpx.get(f"{keyed}/v1/models", headers=_bearer(ADMIN)).status_code == 200


def test_metrics_can_be_left_open_to_scrapers(coe_file):
    srv, ctx = start(coe_file, api_key=API, public_metrics=True)
    with ctx as url:
        base = url.removesuffix("/v1")
        assert httpx.get(f"{base}/metrics").status_code == 200
        assert httpx.get(f"{base}/v1/models").status_code == 401


def test_a_request_id_is_echoed_logged_and_made_when_missing_or_unfit(keyed, caplog):
    body = {"model": "sql", "prompt": "hi", "max_tokens": 2}
    with caplog.at_level(logging.INFO, logger="coeflow.server.app"):
        r = httpx.post(f"{keyed}/v1/completions", json=body, headers={**_bearer(API), "X-Request-Id": "trace-42.a"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "trace-42.a"
    assert any("trace-42.a" in m and "sql" in m for m in caplog.messages)
    made = httpx.post(f"{keyed}/v1/completions", json=body, headers=_bearer(API)).headers["x-request-id"]
    odd = httpx.post(f"{keyed}/v1/completions", json=body,
                     headers={**_bearer(API), "X-Request-Id": "no spaces please"}).headers["x-request-id"]
    assert len(made) == 32 and len(odd) == 32 and made != odd
    assert httpx.get(f"{keyed}/v1/models").headers["x-request-id"]  # a refusal carries one too


def test_cors_is_off_unless_an_origin_is_named_and_a_preflight_needs_no_key(coe_file, keyed):
    preflight = {"Origin": "http://console.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    r = httpx.options(f"{keyed}/v1/chat/completions", headers=preflight)
    assert "access-control-allow-origin" not in r.headers
    srv, ctx = start(coe_file, api_key=API, cors_origins=("http://console.example",))
    with ctx as url:
        r = httpx.options(f"{url}/chat/completions", headers=preflight)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://console.example"
        r = httpx.options(f"{url}/chat/completions", headers={**preflight, "Origin": "http://elsewhere.example"})
        assert r.headers.get("access-control-allow-origin") != "http://elsewhere.example"


def test_a_chat_template_that_refuses_the_messages_is_a_400_naming_the_expert(coe_file, tmp_path):
    root = tmp_path / "coe"
    shutil.copytree(coe_file.parent, root)
    config = root / "experts" / "sql" / "tokenizer_config.json"
    cfg = json.loads(config.read_text())
    cfg["chat_template"] = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not "
                            "supported') }}{% endif %}{% for m in messages %}{{ m['content'] }}{% endfor %}")
    config.write_text(json.dumps(cfg))
    srv, ctx = start(root / "coe.yaml")
    with ctx as url:
        r = httpx.post(f"{url}/chat/completions", json={"model": "sql", "max_tokens": 2, "messages": [
            {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]})
        assert r.status_code == 400
        err = r.json()["error"]
        assert "'sql'" in err["message"] and "System role not supported" in err["message"]
        assert err["param"] == "messages"
        r = httpx.post(f"{url}/chat/completions", json={"model": "sql", "max_tokens": 2,
                                                        "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200


def _used_blocks(srv) -> int:
    return sum(s["used"] for s in srv.scheduler.backend.kv_stats().values())


def test_a_request_past_its_deadline_is_a_408_whose_kv_blocks_go_back(coe_file, monkeypatch):
    import time

    from coeflow.engine.runners.eager import EagerRunner
    step = EagerRunner.step
    monkeypatch.setattr(EagerRunner, "step", lambda *a: time.sleep(0.02) or step(*a))  # a slow expert
    srv, ctx = start(coe_file, request_timeout_s=60.0)
    long = {"model": "sql", "prompt": "hi", "max_tokens": 200, "ignore_eos": True}
    with ctx as url:
        r = httpx.post(f"{url}/completions", json=long, headers={"X-Request-Timeout": "0.5"}, timeout=60)
        assert r.status_code == 408
        assert (r.json()["error"]["type"], r.json()["error"]["code"]) == ("timeout_error", "request_timeout")
        with httpx.stream("POST", f"{url}/completions", json={**long, "stream": True},
                          headers={"X-Request-Timeout": "0.5"}, timeout=60) as s:
            events = [line for line in s.iter_lines() if line.startswith("data: ")]
        assert s.status_code == 200 and "request_timeout" in events[-2] and events[-1] == "data: [DONE]"
        texts = [e for e in events if '"text": ""' not in e and '"text"' in e]
        assert 0 < len(texts) < 200  # some tokens came, then the deadline
        deadline = time.monotonic() + 30  # the cancelled sequences leave at the worker's next step
        while _used_blocks(srv) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _used_blocks(srv) == 0
        ok = httpx.post(f"{url}/completions", json={**long, "max_tokens": 3}, headers={"X-Request-Timeout": "30"})
        assert ok.status_code == 200
        r = httpx.post(f"{url}/completions", json=long, headers={"X-Request-Timeout": "soon"})
        assert r.status_code == 400 and "X-Request-Timeout" in r.json()["error"]["message"]


def test_an_expert_without_a_chat_template_refuses_chat_until_the_coe_file_gives_one(coe_file, tmp_path):
    import yaml

    from coeflow.model import Tokenizer
    root = tmp_path / "coe"
    shutil.copytree(coe_file.parent, root)
    config = root / "experts" / "sql" / "tokenizer_config.json"
    config.write_text(json.dumps({k: v for k, v in json.loads(config.read_text()).items() if k != "chat_template"}))
    chat = {"model": "sql", "max_tokens": 2, "messages": [{"role": "user", "content": "list users"}]}
    srv, ctx = start(root / "coe.yaml")
    with ctx as url:
        r = httpx.post(f"{url}/chat/completions", json=chat)
        assert r.status_code == 400 and "'sql' has no chat template" in r.json()["error"]["message"]
        assert httpx.post(f"{url}/completions", json={"model": "sql", "prompt": "list users", "max_tokens": 2}
                          ).status_code == 200
    (root / "templates").mkdir()
    (root / "templates" / "sql.jinja").write_text(
        "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}[assistant] ")
    doc = yaml.safe_load((root / "coe.yaml").read_text())
    next(e for e in doc["experts"] if e["name"] == "sql")["chat_template"] = "templates/sql.jinja"
    (root / "coe.yaml").write_text(yaml.safe_dump(doc))
    srv, ctx = start(root / "coe.yaml")
    with ctx as url:
        r = httpx.post(f"{url}/chat/completions", json=chat)
        want = Tokenizer.from_dir(root / "experts" / "sql").encode("[user] list users\n[assistant] ",
                                                                   add_special_tokens=False)
        assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == len(want)


def test_a_coe_files_max_context_caps_an_experts_prompt_and_output(coe_file, tmp_path):
    import yaml
    root = tmp_path / "coe"
    shutil.copytree(coe_file.parent, root)
    doc = yaml.safe_load((root / "coe.yaml").read_text())
    next(e for e in doc["experts"] if e["name"] == "sql")["max_context"] = 64
    (root / "coe.yaml").write_text(yaml.safe_dump(doc))
    srv, ctx = start(root / "coe.yaml")
    with ctx as url:
        body = {"prompt": "list users", "max_tokens": 60}
        r = httpx.post(f"{url}/completions", json={**body, "model": "sql"})
        assert r.status_code == 400 and "context of 64 tokens" in r.json()["error"]["message"]
        assert httpx.post(f"{url}/completions", json={**body, "model": "shell"}).status_code == 200  # its own 512
        assert httpx.post(f"{url}/completions", json={**body, "model": "sql", "max_tokens": 20}).status_code == 200
