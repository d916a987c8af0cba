"""Tests that attack the server as a hostile but fair client would (issue #26): generated bodies
against both completion routes, connections that dribble their bodies or send too much, and an
expert whose weights are corrupted and restored while traffic runs. Each attack checks what a
user relies on: an error is the attacker's alone, in OpenAI's shape, and everyone else is
served as before. The last tests are attacks that once hurt, each kept as it was found."""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai import OpenAI

from coe_fixture import EXPERTS, start, write_coe
from coeflow.engine.sampling import SEED_MAX, SEED_MIN
from coeflow.server import Limits
from coeflow.server.protocol import ROLES

pytestmark = pytest.mark.e2e

MAX_TOKENS = 16  # the fuzzed server's limit: every valid request generates little
# Room for the longest prompt the valid strategies write (3 turns of 30 four-byte characters);
# below the experts' context of 512 tokens less MAX_TOKENS.
MAX_PROMPT_TOKENS = 480
ERROR_KEYS = {"message", "type", "param", "code"}
# Generated examples per route; COEFLOW_FUZZ_EXAMPLES raises it for a longer hunt, and
# COEFLOW_FUZZ_RANDOM=1 draws new examples each run instead of the suite's fixed ones.
EXAMPLES = int(os.environ.get("COEFLOW_FUZZ_EXAMPLES", "250"))
RANDOM = os.environ.get("COEFLOW_FUZZ_RANDOM") == "1"


@pytest.fixture(scope="module")
def fuzzed(coe_file):
    """(server, base_url) of the server the fuzzer attacks."""
    srv, ctx = start(coe_file, limits=Limits(max_tokens=MAX_TOKENS, max_prompt_tokens=MAX_PROMPT_TOKENS))
    with ctx as url:
        yield srv, url


def _post(http: httpx.Client, url: str, raw: bytes) -> httpx.Response:
    return http.post(url, content=raw, headers={"content-type": "application/json"})


def _assert_openai_error(r: httpx.Response) -> dict:
    """A 4xx whose body is exactly {"error": {message, type, param, code}}."""
    assert 400 <= r.status_code < 500, f"{r.status_code}: {r.text[:500]}"
    assert r.headers["content-type"].startswith("application/json"), r.text[:500]
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
    err = body["error"]
    assert isinstance(err["message"], str) and err["message"] and isinstance(err["type"], str), err
    assert err["param"] is None or isinstance(err["param"], str), err
    assert err["code"] is None or isinstance(err["code"], str), err
    return err


def _assert_answer(r: httpx.Response, stream: bool) -> None:
    """A 200 that is a whole answer: one choice, or a stream of chunks ending in [DONE] with no
    error event."""
    assert r.status_code == 200, r.text[:500]
    if not stream:
        assert len(r.json()["choices"]) == 1, r.text[:500]
        return
    events = [line.removeprefix("data: ") for line in r.text.splitlines() if line.startswith("data: ")]
    assert events and events[-1] == "[DONE]", r.text[-500:]
    for ev in events[:-1]:
        assert "error" not in json.loads(ev), ev


# --- what the fuzzer sends ----------------------------------------------------------------

# Text of any code point a JSON string may hold as text (no lone surrogates).
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
SURROGATE_TEXT = st.builds(lambda a, s, b: a + s + b, TEXT, st.characters(categories=("Cs",)), TEXT)
# Python refuses to parse integers of more than 4300 digits: longer ones have a test of their own.
HUGE_INTS = st.integers(1, 4299).map(lambda digits: 10**digits - 1) | st.integers(1, 4299).map(lambda d: 1 - 10**d)
SCALARS = (st.none() | st.booleans() | st.integers() | HUGE_INTS | st.floats() | TEXT | SURROGATE_TEXT)
ANY_JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)

MODELS = st.sampled_from(["coe", *EXPERTS])
CONTENT = TEXT | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=10)}),
                          max_size=3)
TURN = (st.fixed_dictionaries({"role": st.sampled_from([r for r in ROLES if r != "tool"]), "content": CONTENT})
        | st.fixed_dictionaries({"role": st.just("tool"), "content": CONTENT, "tool_call_id": st.text(min_size=1, max_size=10)}))
MESSAGES = st.lists(TURN, min_size=1, max_size=3)
STOPS = st.text(min_size=1, max_size=5) | st.lists(st.text(min_size=1, max_size=5), max_size=4)
# Each field's valid values (None too: null means unset).
VALID: dict[str, st.SearchStrategy] = {
    "max_tokens": st.integers(1, MAX_TOKENS),
    "max_completion_tokens": st.integers(1, MAX_TOKENS),
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1, exclude_min=True),
    "top_k": st.integers(0, 10**30),
    "seed": st.integers(SEED_MIN, SEED_MAX),
    "stop": STOPS,
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans()}),
    "ignore_eos": st.booleans(),
    "n": st.just(1),
    "presence_penalty": st.floats(-2, 2),
    "frequency_penalty": st.floats(-2, 2),
    "min_p": st.floats(0, 1),
    "user": TEXT,
}
VALID = {k: v | st.none() for k, v in VALID.items()}
# Values at the edges of the fields' ranges (and of the types' own), which random JSON seldom hits.
EDGES = st.sampled_from([0, -1, MAX_TOKENS + 1, SEED_MAX + 1, SEED_MIN - 1, 2**63, -0.0, 2.0000001, 1.0000001, 1e308,
                         -1e-300, float("inf"), float("-inf"), float("nan"), "", "1", "true", [], {}, [None], True])
SPOILED_TURN = st.fixed_dictionaries({"role": st.sampled_from(ROLES) | ANY_JSON, "content": CONTENT | ANY_JSON},
                                     optional={"name": ANY_JSON, "tool_calls": ANY_JSON,
                                                                         "tool_call_id": ANY_JSON})


def _unknown_fields(known: set[str]) -> st.SearchStrategy:
    return st.dictionaries(st.text(min_size=1, max_size=12).filter(lambda k: k not in known), ANY_JSON, max_size=3)


def _bodies(chat: bool) -> st.SearchStrategy[tuple[bytes, bool, Any]]:
    """(raw body, whether it is valid by construction, the JSON value it spells or None): valid bodies with unknown fields added;
    valid bodies with one or two fields spoiled (any JSON, a value at a limit's edge, a chat turn
    of the wrong shape); bodies whose every field may be anything or missing; JSON that is not
    an object; bytes that are not JSON, truncated JSON and JSON nested deeper than a parser goes."""
    text_field = "messages" if chat else "prompt"
    text_value = MESSAGES if chat else TEXT | st.lists(TEXT, min_size=1, max_size=1)
    known = {"model", text_field, *VALID}
    valid = st.builds(lambda required, optional, extra: {**extra, **required, **optional},
                      st.fixed_dictionaries({"model": MODELS, text_field: text_value}),
                      st.fixed_dictionaries({}, optional=VALID), _unknown_fields(known))
    spoilers = {k: ANY_JSON | EDGES for k in known}
    if chat:
        spoilers["messages"] |= st.lists(SPOILED_TURN | ANY_JSON, max_size=3)
    spoiled = st.builds(lambda body, bad: {**body, **bad}, valid, st.lists(
        st.sampled_from(sorted(known)), min_size=1, max_size=2, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: spoilers[k] for k in keys})))
    anything = st.builds(lambda fields, extra: {**extra, **fields},
                         st.fixed_dictionaries({}, optional=spoilers), _unknown_fields(known))
    nested = st.integers(1, 200_000).map(lambda n: b'{"model": "sql", "' + text_field.encode() + b'": '
                                         + b"[" * n + b"]" * n + b"}")
    # one_of draws each branch about equally often: valid and spoiled bodies come in several copies
    return st.one_of(
        *[valid.map(lambda b: (_dumps(b), True, b)) for _ in range(3)],
        *[spoiled.map(lambda b: (_dumps(b), False, b)) for _ in range(4)],
        anything.map(lambda b: (_dumps(b), False, b)),
        ANY_JSON.filter(lambda v: not isinstance(v, dict)).map(lambda v: (_dumps(v), False, v)),
        st.binary(max_size=200).map(lambda raw: (raw, False, None)),
        st.tuples(valid.map(_dumps), st.floats(0, 1, exclude_max=True)).map(
            lambda t: (t[0][: int(len(t[0]) * t[1])], False, None)),
        nested.map(lambda raw: (raw, False, None)),
    )


def _dumps(value: Any) -> bytes:
    """JSON as a client might send it: NaN and Infinity spelled as Python's json writes them,
    lone surrogates escaped."""
    return json.dumps(value).encode()


# --- the fuzzer ---------------------------------------------------------------------------

@pytest.mark.parametrize("route", ["chat/completions", "completions"])
def test_fuzzed_bodies_get_an_answer_or_an_openai_error_and_leave_others_unaffected(fuzzed, route):
    """Generated bodies, valid and not: every answer is a 2xx (always, for a body valid by
    construction) or a 4xx in OpenAI's shape, never a 5xx. Meanwhile a well-formed greedy
    request gets the answer it got before the fuzzing, during it and after it."""
    _, url = fuzzed
    chat = route == "chat/completions"
    well_formed = {"model": "sql", "max_tokens": 8, "temperature": 0,
                   **({"messages": [{"role": "user", "content": "select name from users"}]} if chat
                      else {"prompt": "select name from users"})}

    def answer(http: httpx.Client) -> tuple[int, str]:
        r = http.post(f"{url}/{route}", json=well_formed)
        if r.status_code != 200:
            return r.status_code, r.text
        choice = r.json()["choices"][0]
        return 200, choice["message"]["content"] if chat else choice["text"]

    http = httpx.Client(timeout=60)
    before = answer(http)
    assert before[0] == 200, before
    neighbour: list[tuple[int, str]] = []
    stop = threading.Event()

    def neighbour_traffic() -> None:
        with httpx.Client(timeout=60) as own:
            while not stop.is_set():
                neighbour.append(answer(own))

    thread = threading.Thread(target=neighbour_traffic)
    thread.start()

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM, database=None,
              suppress_health_check=list(HealthCheck))
    @given(_bodies(chat))
    def attack(case: tuple[bytes, bool, Any]) -> None:
        raw, valid, body = case
        r = _post(http, f"{url}/{route}", raw)
        if valid or r.status_code < 300:
            _assert_answer(r, stream=isinstance(body, dict) and body.get("stream") is True)
        else:
            _assert_openai_error(r)

    try:
        attack()
        assert answer(http) == before
    finally:
        stop.set()
        thread.join(timeout=60)
        http.close()
    assert neighbour and set(neighbour) == {before}, "a well-formed request's answer changed during the fuzzing"


# --- bodies that never end, and bodies too large ------------------------------------------

BODY_LIMIT = 16 << 10


def _dribble(host: str, port: int, connected: threading.Event, stop: threading.Event) -> None:
    """A slow-loris client: headers promising a body, then three bytes every half second."""
    with socket.create_connection((host, port), timeout=30) as s:
        s.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\ncontent-type: application/json\r\n"
                  f"content-length: {BODY_LIMIT}\r\n\r\n".encode() + b'{"mo')
        connected.set()
        while not stop.wait(0.5):
            s.sendall(b"del")


def _oversize(url: str, stop: threading.Event, statuses: list[int | str]) -> None:
    """Bodies one byte over the limit, as fast as the server answers: with their length
    declared, and chunked without one (the limit must hold while reading)."""
    head, tail = b'{"model": "sql", "prompt": "', b'"}'
    body = head + b"x" * (BODY_LIMIT + 1 - len(head) - len(tail)) + tail
    with httpx.Client(timeout=30) as http:
        for i in range(10**6):
            if stop.is_set():
                return
            content = body if i % 2 else iter([body[:BODY_LIMIT // 2], body[BODY_LIMIT // 2:]])
            try:
                statuses.append(http.post(f"{url}/completions", content=content,
                                          headers={"content-type": "application/json"}).status_code)
            except httpx.TransportError as e:  # the server may answer 413 and close before the rest is sent
                statuses.append(type(e).__name__)


def test_slow_loris_and_oversized_bodies_do_not_stall_other_clients(coe_file):
    srv, ctx = start(coe_file, limits=Limits(max_body_bytes=BODY_LIMIT))
    with ctx as url:
        client = OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)

        def timed() -> float:
            t = time.perf_counter()
            out = client.completions.create(model="sql", prompt="select name from users", max_tokens=8,
                                            temperature=0)
            assert out.choices[0].text is not None
            return time.perf_counter() - t

        timed()  # the expert's first load is not part of its quiet time
        quiet = statistics.median(timed() for _ in range(7))
        stop, statuses = threading.Event(), []
        host, port = urlsplit(url).hostname, urlsplit(url).port
        connected = [threading.Event() for _ in range(8)]
        attackers = [threading.Thread(target=_dribble, args=(host, port, c, stop)) for c in connected]
        attackers.append(threading.Thread(target=_oversize, args=(url, stop, statuses)))
        for t in attackers:
            t.start()
        try:
            assert all(c.wait(30) for c in connected)
            busy = [timed() for _ in range(8)]
        finally:
            stop.set()
            for t in attackers:
                t.join(timeout=30)
        answered = [s for s in statuses if isinstance(s, int)]
        assert answered and set(answered) == {413}, statuses
        # A bound against a stall, not a timing target: the machine running the suite is shared
        # and this process also runs the attackers, so only a wait far past the quiet one (the
        # attackers holding the event loop or a worker) fails it.
        bound = max(5 * quiet, quiet + 2.0)
        assert max(busy) <= bound, f"quiet median {quiet:.3f} s; under attack {busy}"


# --- an expert corrupted and restored while traffic runs ----------------------------------

TRAFFIC = [("sql", EXPERTS["sql"][0]), ("shell", EXPERTS["shell"][1]), ("general", EXPERTS["general"][0]),
           ("coe", EXPERTS["shell"][2]), ("coe", EXPERTS["sql"][1])]


def test_an_expert_corrupted_and_restored_under_traffic_fails_alone(tmp_path):
    """While a thread asks every expert in turn, one expert's weights are truncated on disk and
    the expert is sent back to disk and loaded again: the load fails cleanly (400), /health
    names it, requests for it get 503s and routed ones another expert's answer; once the file is
    restored a load brings it back. The other experts answer every request throughout."""
    coe = write_coe(tmp_path)
    weights = tmp_path / "experts" / "shell" / "model.safetensors"
    saved = tmp_path / "shell.safetensors"
    shutil.copy(weights, saved)
    srv, ctx = start(coe)
    rows: list[tuple[float, float, str, str, int, str | None]] = []  # start, end, model, prompt, status, expert
    pause, stop = threading.Lock(), threading.Event()

    def traffic(url: str) -> None:
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                for model, prompt in TRAFFIC:
                    with pause:
                        t = time.monotonic()
                        r = http.post(f"{url}/chat/completions", json={
                            "model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 4})
                        rows.append((t, time.monotonic(), model, prompt, r.status_code,
                                     r.headers.get("x-coeflow-expert")))

    def wait_for(n: int) -> None:
        deadline = time.monotonic() + 60  # a bound on waiting for traffic, not a timing under test
        while len(rows) < n:
            assert time.monotonic() < deadline and thread.is_alive(), rows[-5:]
            time.sleep(0.05)

    with ctx as url:
        health = url.removesuffix("/v1") + "/health"
        thread = threading.Thread(target=traffic, args=(url,))
        thread.start()
        try:
            wait_for(10)
            # Paused between two requests, so that the admin load is what finds the file broken (a
            # request racing it to the load is test_a_routed_request_whose_expert_fails_to_load...).
            with pause:
                weights.write_bytes(weights.read_bytes()[: -4096])
                assert httpx.post(f"{url}/experts/shell/unload", json={"tier": "disk"}).status_code == 200
                broken_at = time.monotonic()
                err = _assert_openai_error(httpx.post(f"{url}/experts/shell/load", json={}, timeout=60))
                assert err["message"].startswith("expert 'shell' is unavailable")
                assert str(tmp_path) not in err["message"], "the server's file system leaked"
            assert list(httpx.get(health).json()["failed"]) == ["shell"]
            wait_for(len(rows) + 15)
            shutil.copy(saved, weights)
            r = httpx.post(f"{url}/experts/shell/load", json={}, timeout=60)
            repaired_at = time.monotonic()
            assert r.status_code == 200 and r.json()["error"] is None, r.text
            assert httpx.get(health).json()["status"] == "ok"
            wait_for(len(rows) + 15)
        finally:
            stop.set()
            thread.join(timeout=60)

    for start_t, end_t, model, prompt, status, expert in rows:
        shell_prompt = prompt in EXPERTS["shell"]
        broken = start_t > broken_at and end_t < repaired_at
        healthy = end_t < broken_at or start_t > repaired_at
        if model == "shell" and broken:
            assert status == 503, (model, status)
        elif model == "shell" and not healthy:  # in flight while its state changed
            assert status in (200, 503), (model, status)
        else:
            assert status == 200, (model, prompt, status)
        if model == "coe" and shell_prompt and broken:
            assert expert == "general", (model, prompt, expert)
    assert any(m == "shell" and s == 503 for _, _, m, _, s, _ in rows), "the broken window saw no request"
    assert any(m == "coe" and e == "shell" for _, _, m, _, _, e in rows), "the router never chose shell"


# --- a neighbour whose sampling fails -----------------------------------------------------

def test_a_request_whose_sampling_fails_leaves_its_batch_mates_answers_unchanged(fuzzed):
    """A temperature so small that sampling overflows ends that sequence alone; the others
    batched with it get the answers they get alone."""
    _, url = fuzzed
    client = OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
    texts = ["select * from users", "select id from orders", "count the rows"]

    def ask(text: str) -> str | None:
        return client.completions.create(model="sql", prompt=text, max_tokens=8, temperature=1.0,
                                         seed=11).choices[0].text
    alone = [ask(t) for t in texts]
    together: dict[str, str | None] = {}
    threads = [threading.Thread(target=lambda t=t: together.__setitem__(t, ask(t))) for t in texts]
    for th in threads:
        th.start()
    httpx.post(f"{url}/completions", timeout=60,
               json={"model": "sql", "prompt": "x", "max_tokens": 8, "temperature": 1e-40})
    for th in threads:
        th.join()
    assert [together[t] for t in texts] == alone


# --- attacks that once hurt ---------------------------------------------------------------

@pytest.mark.parametrize("route", ["completions", "chat/completions", "experts/sql/load"])
def test_an_integer_too_long_to_parse_is_a_400(fuzzed, route):
    _, url = fuzzed
    raw = b'{"model": "sql", "prompt": "x", "max_tokens": 1' + b"0" * 5000 + b"}"
    r = httpx.post(f"{url}/{route}", content=raw, headers={"content-type": "application/json"}, timeout=60)
    _assert_openai_error(r)
    assert r.status_code == 400


@pytest.mark.parametrize("field,value", [("temperature", 1e-40), ("top_p", 1e-46)])
@pytest.mark.parametrize("stream", [False, True])
def test_a_sampling_value_too_small_for_float32_is_not_a_server_error(fuzzed, field, value, stream):
    _, url = fuzzed
    body = {"model": "sql", "prompt": "select", "max_tokens": 4, "temperature": 1.0, field: value, "stream": stream}
    r = httpx.post(f"{url}/completions", json=body, timeout=60)
    _assert_answer(r, stream)


def test_a_routed_request_whose_expert_fails_to_load_gets_the_routers_next_choice(tmp_path):
    coe = write_coe(tmp_path)
    weights = tmp_path / "experts" / "shell" / "model.safetensors"
    srv, ctx = start(coe)
    with ctx as url:
        assert httpx.post(f"{url}/experts/shell/unload", json={"tier": "disk"}).status_code == 200
        weights.write_bytes(weights.read_bytes()[: -4096])  # found only when a request loads it
        ranked = [e for e, _ in srv.router.route(EXPERTS["shell"][1]).candidates]
        assert ranked[0] == "shell"
        r = httpx.post(f"{url}/chat/completions", timeout=60, json={
            "model": "coe", "messages": [{"role": "user", "content": EXPERTS["shell"][1]}], "max_tokens": 4})
        assert r.status_code == 200 and r.headers["x-coeflow-expert"] == ranked[1], r.text
        assert r.headers["x-coeflow-rerouted-from"] == "shell"
