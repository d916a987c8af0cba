"""The server as an OpenAI client sees it: chat and completions, streaming and not, routed and
direct, concurrency, disconnects, every error in the OpenAI shape. Every test runs against one
process and against the same CoE on Ray Serve (`coeflow serve --ray`: an ingress and two expert
replicas on a three-node cluster)."""

from __future__ import annotations

import concurrent.futures
import contextlib

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from coe_fixture import OnRay, start
from coeflow.router import Router

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["single", pytest.param("ray", marks=pytest.mark.slow)])
def live(request, coe_file):
    """(server, base_url): one process, or the CoE on Ray (an OnRay in place of the server)."""
    from coeflow.server import Limits
    limits = Limits(max_tokens=256, max_prompt_tokens=200)
    if request.param == "ray":
        yield request.getfixturevalue("on_ray")
        return
    srv, ctx = start(coe_file, limits=limits)
    with ctx as url:
        yield srv, url


@contextlib.contextmanager
def queue_limit(srv, n: int):
    """Each expert queue's limit set to `n` for a while (on Ray: every replica's)."""
    if isinstance(srv, OnRay):
        srv.reconfigure(max_queue=n)
        try:
            yield
        finally:
            srv.reconfigure(max_queue=srv.opts.max_queue)
        return
    before, srv.scheduler.max_queue = srv.scheduler.max_queue, n
    try:
        yield
    finally:
        srv.scheduler.max_queue = before


def chat(client, model, text, **kw):
    kw.setdefault("max_tokens", 12)
    kw.setdefault("temperature", 0)
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **kw)


def test_models_lists_coe_and_every_expert(client):
    ids = [m.id for m in client.models.list()]
    assert ids == ["coe", "sql", "shell", "general"]


def test_chat_direct_answers_with_usage_and_expert(client):
    raw = client.chat.completions.with_raw_response.create(
        model="shell", messages=[{"role": "user", "content": "ls -la"}], max_tokens=10, temperature=0)
    r = raw.parse()
    assert raw.headers["x-coeflow-expert"] == "shell"
    assert r.model == "shell" and r.choices[0].message.role == "assistant"
    assert r.usage.completion_tokens <= 10 and r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.model_extra["coeflow"]["expert"] == "shell"


def test_routed_request_goes_where_the_router_says(client, coe_file):
    from coeflow.coefile import load_coe
    router = Router.load(load_coe(coe_file).router_dir)
    for text in ("select name from users where id = 2", "grep recursively for foo in bash"):
        raw = client.chat.completions.with_raw_response.create(
            model="coe", messages=[{"role": "user", "content": text}], max_tokens=4, temperature=0)
        d = router.route(text)
        assert raw.headers["x-coeflow-expert"] == d.expert
        assert abs(float(raw.headers["x-coeflow-confidence"]) - d.confidence) < 1e-3
        assert raw.parse().model_extra["coeflow"]["routed"] is True


@pytest.mark.parametrize("kind", ["chat", "completions"])
def test_stream_equals_non_stream(client, kind):
    if kind == "chat":
        whole = chat(client, "sql", "select", max_tokens=16).choices[0].message.content
        stream = chat(client, "sql", "select", max_tokens=16, stream=True,
                      stream_options={"include_usage": True})
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        whole = client.completions.create(model="sql", prompt="select", max_tokens=16, temperature=0).choices[0].text
        chunks = list(client.completions.create(model="sql", prompt="select", max_tokens=16, temperature=0,
                                                stream=True, stream_options={"include_usage": True}))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole and whole
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)


def test_concurrent_streams_all_complete_and_match_sequential(client):
    prompts = [("sql", "select id"), ("shell", "ls"), ("general", "the fox"), ("sql", "from users"),
               ("shell", "grep foo"), ("general", "a story")] * 2
    want = [chat(client, m, p).choices[0].message.content for m, p in prompts]

    def streamed(mp):
        m, p = mp
        return "".join(c.choices[0].delta.content or "" for c in chat(client, m, p, stream=True) if c.choices)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(streamed, prompts))
    assert got == want


def test_client_disconnect_mid_stream_frees_its_slot(live, client):
    srv, url = live
    with httpx.stream("POST", f"{url}/chat/completions", timeout=30, json={
            "model": "general", "messages": [{"role": "user", "content": "a story"}],
            "max_tokens": 250, "stream": True, "temperature": 0}) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i >= 3:
                break  # hang up after a few chunks
    # the server keeps serving, and the abandoned sequence was cancelled, not run to 250 tokens
    assert chat(client, "sql", "select").choices[0].message.content is not None
    metrics = httpx.get(url.removesuffix("/v1") + "/metrics").text
    assert 'coeflow_requests_total{expert="general",outcome="cancelled"}' in metrics


@pytest.mark.parametrize("body,status,needle", [
    ({"model": "sql", "messages": "hi"}, 400, "messages"),
    ({"model": "sql", "messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"}, 400, "max_tokens"),
    ({"model": "sql", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}, 400, "max_tokens"),
    ({"model": "sql", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10**9}, 400, "max_tokens"),
    ({"model": "sql", "messages": [{"role": "user", "content": "x"}], "temperature": 7}, 400, "temperature"),
    ({"model": "sql", "messages": [{"role": "user", "content": "x"}], "n": 17}, 400, "'n'"),
    ({"model": "sql", "messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
    ({"model": "sql", "messages": [{"role": "user", "content": "x" * 5000}]}, 400, "tokens"),
    ({"messages": [{"role": "user", "content": "x"}]}, 400, "model"),
    ({"model": "gpt-5", "messages": [{"role": "user", "content": "x"}]}, 404, "gpt-5"),
])
def test_bad_requests_get_openai_errors(live, body, status, needle):
    r = httpx.post(f"{live[1]}/chat/completions", json=body, timeout=30)
    assert r.status_code == status
    err = r.json()["error"]
    assert needle in err["message"] and err["type"]


USER = [{"role": "user", "content": "x"}]


@pytest.mark.parametrize("body,param", [
    ({"model": "sql", "messages": USER, "max_tokens": "ten"}, "max_tokens"),
    ({"model": "sql", "messages": USER + [{"role": "wizard", "content": "y"}]}, "messages[1].role"),
    ({"model": "sql", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     "messages[0].content"),
    ({"model": "sql", "messages": USER, "stream": "yes"}, "stream"),
    ({"model": "sql", "messages": USER, "top_k": -2}, "top_k"),
    ({"model": "sql", "messages": USER, "presence_penalty": 2.5}, "presence_penalty"),
    ({"model": "sql", "messages": USER, "tools": [{"type": "function", "function": {"name": "f g"}}]},
     "tools[0].function.name"),
    ({"model": "sql", "messages": USER, "tool_choice": "required"}, "tool_choice"),
    ({"model": "sql", "messages": USER, "response_format": {"type": "xml"}}, "response_format"),
    ({"model": "sql", "messages": USER, "logit_bias": {"5": 1000}}, "logit_bias"),
    ({"model": "sql", "messages": USER, "top_logprobs": 2}, "top_logprobs"),
    ({"model": "sql", "messages": USER, "modalities": ["text", "audio"]}, "modalities"),
    ({"model": "sql", "messages": USER, "audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ({"model": "sql", "messages": USER, "reasoning_effort": "high"}, "reasoning_effort"),
    ({"model": "sql", "messages": USER, "web_search_options": {}}, "web_search_options"),
    ({"model": "sql", "messages": USER, "store": True}, "store"),
    ({"model": "sql", "messages": USER, "service_tier": "flex"}, "service_tier"),
    ({"model": "sql", "messages": USER, "functions": [{"name": "f"}]}, "functions"),
])
def test_a_bad_field_is_named_in_the_openai_error(live, body, param):
    r = httpx.post(f"{live[1]}/chat/completions", json=body, timeout=30)
    assert r.status_code == 400
    err = r.json()["error"]
    assert (err["type"], err["param"], err["code"]) == ("invalid_request_error", param, None)
    assert err["message"].startswith(f"'{param}' ")


def test_openai_fields_that_ask_for_nothing_coeflow_lacks_are_accepted_and_unknown_fields_ignored(live):
    r = httpx.post(f"{live[1]}/chat/completions", timeout=30, json={
        "model": "sql", "messages": [{"role": "user", "content": "x", "name": "ann"}], "max_tokens": 2,
        "user": "ann", "metadata": {"k": "v"}, "logit_bias": {}, "response_format": {"type": "text"},
        "parallel_tool_calls": False, "seed": None, "stop": None, "tool_choice": "none", "store": False,
        "modalities": ["text"], "service_tier": "auto", "prompt_cache_key": "k", "top_k": -1, "x-something-new": 1})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 2


@pytest.mark.parametrize("field,value", [("echo", True), ("suffix", "}"), ("best_of", 3), ("logprobs", 9)])
def test_completions_fields_coeflow_cannot_honour_or_out_of_range_are_refused_by_name(live, field, value):
    r = httpx.post(f"{live[1]}/completions", timeout=30, json={"model": "sql", "prompt": "x", field: value})
    assert r.status_code == 400 and r.json()["error"]["param"] == field


def test_admin_bodies_are_validated_by_field(live):
    url = live[1]
    r = httpx.post(f"{url}/experts/sql/pin", json={"pinned": "no"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "pinned"
    r = httpx.post(f"{url}/experts/sql/load", json=["device"])
    assert r.status_code == 400 and "JSON object" in r.json()["error"]["message"]
    for action, body, param in (("load", {"tir": "host"}, "tir"), ("load", {"tier": "disk"}, "tier"),
                                ("unload", {"tier": "device"}, "tier"), ("pin", {"pinned": True, "x": 1}, "x")):
        r = httpx.post(f"{url}/experts/sql/{action}", json=body)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (action, body, r.text)
    assert httpx.post(f"{url}/experts/sql/fly", json={}).status_code == 404


def test_malformed_json_is_a_400(live):
    r = httpx.post(f"{live[1]}/chat/completions", content=b"{not json", timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]


def test_openai_client_raises_typed_errors(client):
    with pytest.raises(openai.NotFoundError):
        chat(client, "no-such-expert", "x")
    with pytest.raises(openai.BadRequestError):
        chat(client, "sql", "x", max_tokens=0)


def test_full_queue_is_a_429_with_a_message(live, client):
    with queue_limit(live[0], 0):
        with pytest.raises(openai.RateLimitError, match="queue is full"):
            chat(client, "sql", "select")
    assert chat(client, "sql", "select").choices[0].message.content is not None


def test_experts_endpoint_and_admin_routes(live, client):
    url = live[1]
    chat(client, "shell", "ls")
    rows = {r["name"]: r for r in httpx.get(f"{url}/experts").json()["data"]}
    assert set(rows) == {"sql", "shell", "general"}
    assert rows["shell"]["tier"] == "device" and rows["shell"]["bytes"] > 0 and rows["shell"]["hits"] + rows["shell"]["misses"] >= 1
    assert httpx.post(f"{url}/experts/sql/pin", json={"pinned": True}).json()["pinned"] is True
    assert httpx.post(f"{url}/experts/general/unload", json={"tier": "disk"}).json()["tier"] == "disk"
    assert httpx.post(f"{url}/experts/general/load").json()["tier"] == "device"
    assert httpx.post(f"{url}/experts/nobody/load").status_code == 404


def _counters(url: str, expert: str) -> dict[str, float]:
    """This expert's series from /metrics (counters, and the number of latency observations)."""
    text = httpx.get(url.removesuffix("/v1") + "/metrics").text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("expert") == expert:
                key = s.name + "".join(f",{k}={v}" for k, v in sorted(s.labels.items()) if k not in ("expert", "le"))
                if "le" not in s.labels:
                    out[key] = s.value
            elif family.name == "coeflow_expert_acquires":
                out[f"{s.name},{s.labels['source_tier']}"] = s.value
            elif family.name == "coeflow_kv_blocks" and expert in s.labels["experts"].split(","):
                out[f"{s.name},state={s.labels['state']}"] = s.value
            elif family.name == "coeflow_prefix_tokens" and expert in s.labels["experts"].split(","):
                out[f"{s.name},kind={s.labels['kind']}"] = s.value
            elif family.name == "coeflow_batch_steps":
                out["coeflow_batch_steps_total"] = out.get("coeflow_batch_steps_total", 0) + s.value
    return out


def test_metrics_count_requests_tokens_and_latency(live, client):
    srv, url = live
    before = _counters(url, "shell")
    sent = [3, 5, 7]  # max_tokens of each request; ignore_eos makes each generate exactly that many
    usages = [chat(client, "shell", f"ls {i}", max_tokens=n, extra_body={"ignore_eos": True}).usage
              for i, n in enumerate(sent)]
    tok = srv.runtimes["shell"].tokenizer
    prompts = [len(tok.encode_chat([{"role": "user", "content": text}])) for text in ("ls 0", "ls 1", "ls 2", "ls -la")]
    stream = chat(client, "shell", "ls -la", max_tokens=4, stream=True, stream_options={"include_usage": True},
                  extra_body={"ignore_eos": True})
    usages.append([c for c in stream if c.usage][-1].usage)
    sent.append(4)
    assert [u.completion_tokens for u in usages] == sent
    after = _counters(url, "shell")

    def grew(key: str) -> float:
        return after.get(key, 0) - before.get(key, 0)
    assert grew("coeflow_requests_total,outcome=ok") == len(sent)
    assert grew("coeflow_completion_tokens_total") == sum(sent)
    assert [u.prompt_tokens for u in usages] == prompts
    assert grew("coeflow_prompt_tokens_total") == sum(prompts)
    assert grew("coeflow_time_to_first_token_seconds_count") == len(sent)
    assert grew("coeflow_time_per_output_token_seconds_count") == len(sent)  # every request made > 1 token
    assert sum(v - before.get(k, 0) for k, v in after.items() if k.startswith("coeflow_expert_acquires_total")) \
        == len(sent)
    replicas = getattr(srv, "replicas", 1)  # on Ray, each replica has a device tier of its own
    assert after["coeflow_queue_depth"] == 0 and 1 <= after["coeflow_expert_tier,tier=device"] <= replicas
    assert grew("coeflow_queue_seconds_count") == grew("coeflow_request_seconds_count") == len(sent)
    assert after["coeflow_running"] == 0 and after["coeflow_kv_blocks,state=used"] == 0  # every block back
    assert after["coeflow_kv_blocks,state=free"] > 0
    assert grew("coeflow_batch_steps_total") >= max(sent)  # one request alone takes a step a token
    assert grew("coeflow_prefix_tokens_total,kind=prompt") == sum(prompts)
