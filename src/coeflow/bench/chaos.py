"""`coeflow bench chaos`: well-formed traffic beside hostile clients and a crash, on loopback.

The server runs as a process of its own (`python -m coeflow serve`), so that it can be killed
with SIGKILL and started again. Three phases, each playing the same number of well-formed
requests (the official openai client, a few concurrent clients, Zipf over the served models,
greedy, half of them streamed):

1. quiet: that traffic alone, for its latency without the hostile mix;
2. hostile: the same traffic while other clients send bodies over the size limit, malformed
   JSON, out-of-range seeds and bad fields, dribble bodies a few bytes at a time (slow loris)
   and leave mid-request;
3. crash: the same again, and the server is killed (-9) and restarted partway through.

A well-formed request that fails counts in `failed_normal`, except one that overlaps the
window from the kill to the restarted server's first answer to /health: its client retries
it (as a client of a restarting service would), and each failed try counts in
`failed_in_kill_window`. The server's resident memory is read from /proc before the quiet
phase and after the hostile one."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import httpx
import yaml

from coeflow.bench.experts import make_expert
from coeflow.errors import ConfigError
from coeflow.trace.client import pct

# The test CoE's shape: three small random-weight Llama experts of one shape and a trained router.
EXPERT_CONFIG = dict(vocab_size=400, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
EXAMPLES = {
    "sql": ["select the names of users older than thirty", "join the orders table with customers in sql",
            "count rows grouped by country", "write a sql query that deletes stale sessions",
            "insert three rows into the products table", "sql: the top five salaries per department"],
    "shell": ["list every file in my home directory with ls", "grep recursively for a word in bash",
              "chmod a script so that it runs", "a bash loop over all the log files",
              "tar and gzip a folder from the shell", "kill a process by name in the linux shell"],
    "general": ["tell me a story about a fox", "what is the weather like in spring",
                "write a short poem about the sea", "explain friendship to a child",
                "describe a quiet morning", "give me advice for a job interview"],
}
MAX_BODY = 64 << 10  # the server's --max-body: an oversized body is cheap to send
# The server's --max-tokens, and what a client that leaves mid-request asks for: an answer that
# takes seconds, so that the server's noticing the client has gone is what ends it.
MAX_TOKENS_LIMIT = 400
RETRY_S = 0.2  # a client's pause before retrying a request the kill cut off
# The hostile cases besides slow loris; `disconnect` is a long request whose client leaves.
CASES = ("oversized", "malformed", "bad_seed", "bad_field", "disconnect")
# Time for the server to see that the last of the clients that left has gone, before its
# outcomes are read.
DISCONNECT_SEEN_S = 1.5
BAD_FIELDS = [
    {"temperature": "hot"}, {"max_tokens": 10**9}, {"max_tokens": 0}, {"n": 3}, {"top_p": 0},
    {"messages": []}, {"messages": [{"role": "wizard", "content": "hi"}]}, {"model": "no-such-expert"},
    {"stop": ["a", "b", "c", "d", "e"]}, {"logprobs": True}, {"presence_penalty": 1.5}, {"top_k": -1},
]
MALFORMED = [b"{", b'{"model": "sql", "messages": [', b"\xff\xfe\x00", b"null", b"[1, 2, 3]",
             b'{"model": "sql", "messages": ' + b"[" * 30_000 + b"]" * 30_000 + b"}",
             b'{"model": "sql", "messages": [{"role": "user", "content": "a\\ud800"}]}']


def build_coe(root: Path) -> Path:
    """Write the test CoE under `root` (unless it is there) and train its router."""
    from coeflow.coefile import load_coe
    from coeflow.router import examples_from_coe, train_router
    path = root / "coe.yaml"
    if path.exists():
        return path
    for i, name in enumerate(EXAMPLES):
        make_expert(root / "experts" / name, EXPERT_CONFIG, seed=10 + i)
    doc = {"name": "chaos", "fallback": "general",
           "experts": [{"name": n, "path": f"experts/{n}", "description": f"{n} expert", "examples": ex}
                       for n, ex in EXAMPLES.items()]}
    path.write_text(yaml.safe_dump(doc))
    coe = load_coe(path)
    train_router(examples_from_coe(coe), coe.expert_names, coe.fallback, folds=3).save(coe.router_dir)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m coeflow serve` on 127.0.0.1, with this coeflow on its path; its output goes to
    `log`."""

    def __init__(self, coe: Path, engine: str, log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.argv = [sys.executable, "-m", "coeflow", "serve", "--coe", str(coe), "--port", str(self.port),
                     "--engine", engine, "--max-body", str(MAX_BODY), "--max-tokens", str(MAX_TOKENS_LIMIT),
                     "--log-level", "warning"] + (["--no-warmup"] if engine == "eager" else [])
        self.coe, self.log = coe, log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 600) -> None:
        env = dict(os.environ)
        src = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}): {self._log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer /health in {timeout_s:.0f} s: {self._log_tail()}")
            time.sleep(0.1)

    def rss_mb(self) -> float:
        """Resident memory of the server's process (VmRSS in /proc)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS in /proc")

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)  # drains and stops, as Ctrl-C does
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""


@dataclass
class KillWindow:
    """From the kill to the restarted server's first answer."""
    killed_at: float | None = None
    ready_at: float | None = None

    def overlaps(self, start: float, end: float) -> bool:
        return self.killed_at is not None and end >= self.killed_at and (self.ready_at is None or start < self.ready_at)


@dataclass
class Requests:
    """Well-formed requests: (model, prompt, stream), Zipf over the models."""
    items: list[tuple[str, str, bool]]

    @classmethod
    def zipf(cls, n: int, models: list[str], prompts: dict[str, list[str]], s: float, seed: int) -> "Requests":
        rng = random.Random(seed)
        order = list(models)
        rng.shuffle(order)  # popularity independent of the models' order
        weights = [1 / (k + 1) ** s for k in range(len(order))]
        everything = [p for ps in prompts.values() for p in ps]
        items = []
        for model in rng.choices(order, weights, k=n):
            items.append((model, rng.choice(prompts.get(model) or everything), rng.random() < 0.5))
        return cls(items)


@dataclass
class NormalResult:
    latencies: list[float] = field(default_factory=list)
    completed: int = 0
    failed: int = 0
    failed_in_kill_window: int = 0
    errors: list[str] = field(default_factory=list)


def play(url: str, requests: Requests, concurrency: int, max_tokens: int, window: KillWindow,
         on_done: Callable[[int], None] = lambda n: None) -> NormalResult:
    """Play `requests` with `concurrency` clients of the openai package; each request's latency
    is its whole answer's (streamed or not)."""
    from openai import OpenAI
    result, lock = NormalResult(), threading.Lock()
    todo = iter(list(requests.items))

    def one(client: "OpenAI", model: str, prompt: str, stream: bool) -> None:
        out = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                             max_tokens=max_tokens, temperature=0, stream=stream)
        reasons = ([c.choices[0].finish_reason for c in out if c.choices and c.choices[0].finish_reason]
                   if stream else [out.choices[0].finish_reason])
        if not reasons or reasons[-1] is None:
            raise RuntimeError("the answer ended without a finish_reason")

    def ask(client: "OpenAI", item: tuple[str, str, bool]) -> None:
        """One request, retried while the kill cuts it off."""
        while True:
            t, start = time.perf_counter(), time.monotonic()
            try:
                one(client, *item)
            except Exception as e:  # noqa: BLE001  every failure is counted, and kept for the report
                with lock:
                    if not window.overlaps(start, time.monotonic()):
                        result.failed += 1
                        result.errors.append(f"{item[0]}: {type(e).__name__}: {e}"[:300])
                        return
                    result.failed_in_kill_window += 1
                time.sleep(RETRY_S)
                continue
            with lock:
                result.latencies.append(time.perf_counter() - t)
                result.completed += 1
                on_done(result.completed)
            return

    def worker() -> None:
        with OpenAI(base_url=f"{url}/v1", api_key="chaos", max_retries=0, timeout=120) as client:
            while True:
                with lock:
                    item = next(todo, None)
                if item is None:
                    return
                ask(client, item)

    threads = [threading.Thread(target=worker, name=f"chaos-client-{i}") for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return result


class Hostile:
    """The hostile clients, each a thread, while the context lasts: counts of each answer by
    case: an HTTP status, "kill window" for a connection the kill cut off or refused, or what
    happened instead (an exception's name: a connection lost outside the kill window)."""

    def __init__(self, url: str, rate: float, slow_loris: int, cases: tuple[str, ...], seed: int,
                 window: KillWindow) -> None:
        self.url, self.rng, self.window = url, random.Random(seed), window
        self.pause_s = len(cases) / rate if cases else 0.0  # each case's client paces itself: `rate` together
        self.counts: dict[str, dict[str, int]] = {}
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(case,), name=f"chaos-{case}") for case in cases]
        self._threads += [threading.Thread(target=self._loris, name=f"chaos-loris-{i}") for i in range(slow_loris)]

    def __enter__(self) -> "Hostile":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def _count(self, case: str, outcome: str) -> None:
        with self._lock:
            by = self.counts.setdefault(case, {})
            by[outcome] = by.get(outcome, 0) + 1

    def _loop(self, case: str) -> None:
        with httpx.Client(timeout=60) as http:
            while not self._stop.is_set():
                start = time.monotonic()
                try:
                    self._count(case, self._attack(http, case))
                except (httpx.TransportError, OSError) as e:
                    self._count(case, self._lost(start, e))
                self._stop.wait(self.pause_s)

    def _lost(self, start: float, e: Exception) -> str:
        if self.window.overlaps(start, time.monotonic()):
            self._stop.wait(RETRY_S)
            return "kill window"
        return type(e).__name__

    def _attack(self, http: httpx.Client, case: str) -> str:
        url = f"{self.url}/v1/chat/completions"
        body = {"model": "sql", "messages": [{"role": "user", "content": "select 1"}], "max_tokens": 4}
        if case == "oversized":
            body["messages"][0]["content"] = "x" * MAX_BODY
            raw = json.dumps(body).encode()
        elif case == "malformed":
            raw = self.rng.choice(MALFORMED)
        elif case == "bad_seed":
            seed = self.rng.choice([2**64, -(2**63) - 1, 10**30])
            raw = json.dumps({**body, "temperature": 1.0, "seed": seed}).encode()
        elif case == "bad_field":
            raw = json.dumps({**body, **self.rng.choice(BAD_FIELDS)}).encode()
        else:
            return self._disconnect()
        return str(http.post(url, content=raw, headers={"content-type": "application/json"}).status_code)

    def _address(self) -> tuple[str, int]:
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        return host, int(port)

    def _disconnect(self) -> str:
        """A long non-streamed request whose client leaves before the answer."""
        body = json.dumps({"model": "sql", "messages": [{"role": "user", "content": "select"}],
                           "max_tokens": MAX_TOKENS_LIMIT, "ignore_eos": True}).encode()
        with socket.create_connection(self._address(), timeout=10) as s:
            s.sendall(_request_head(len(body)) + body)
            time.sleep(self.rng.uniform(0.05, 0.3))
        return "disconnected"

    def _loris(self) -> None:
        """Bodies sent four bytes every quarter second; each answer read once the body is whole."""
        body = json.dumps({"model": "general", "messages": [{"role": "user", "content": "hello"}],
                           "max_tokens": 4}).encode()
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                outcome = self._dribble(body)
                if outcome == "no answer" and self.window.overlaps(start, time.monotonic()):
                    outcome = "kill window"
            except OSError as e:
                outcome = self._lost(start, e)
            self._count("slow_loris", outcome)

    def _dribble(self, body: bytes) -> str:
        with socket.create_connection(self._address(), timeout=60) as s:
            s.sendall(_request_head(len(body)))
            for i in range(0, len(body), 4):
                if self._stop.wait(0.25):
                    return "abandoned"
                s.sendall(body[i:i + 4])
            head = s.recv(64).decode("latin-1")  # "HTTP/1.1 200 OK..."
            return head.split(" ")[1] if head.startswith("HTTP/") else "no answer"

    def by_case(self) -> dict[str, dict[str, int]]:
        return {case: dict(sorted(by.items())) for case, by in sorted(self.counts.items())}

    def by_status(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for by in self.counts.values():
            for outcome, n in by.items():
                total[outcome] = total.get(outcome, 0) + n
        return dict(sorted(total.items()))


def _request_head(length: int) -> bytes:
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            f"content-length: {length}\r\nconnection: close\r\n\r\n").encode()


def run(requests: int = 200, concurrency: int = 4, max_tokens: int = 16, hostile_rate: float = 20.0,
        slow_loris: int = 4, cases: tuple[str, ...] = CASES, zipf_s: float = 1.0, engine: str = "eager",
        coe: str | Path | None = None, workdir: Path | None = None, seed: int = 0,
        progress: Callable[[str], None] = lambda s: None) -> dict:
    """The three phases (module docstring); returns the report."""
    from coeflow.bench.machine import machine_name
    if set(cases) - set(CASES):
        raise ConfigError(f"unknown hostile cases {sorted(set(cases) - set(CASES))}; choose from {', '.join(CASES)}")
    for name, value in (("requests", requests), ("concurrency", concurrency), ("max_tokens", max_tokens),
                        ("hostile_rate", hostile_rate)):
        if value <= 0:
            raise ConfigError(f"{name} must be positive, got {value}")
    if requests < 4:
        raise ConfigError("requests must be at least 4: the kill comes after a quarter of a phase's requests")
    tmp = tempfile.TemporaryDirectory() if workdir is None else None
    root = Path(tmp.name) if tmp else Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    report: dict = {"machine": machine_name(), "coe": str(coe) if coe else "the test CoE (3 experts)",
                    "requests_per_phase": requests, "concurrency": concurrency, "max_tokens": max_tokens,
                    "hostile_rate": hostile_rate, "slow_loris": slow_loris, "cases": list(cases), "zipf_s": zipf_s,
                    "engine": engine}
    try:
        if coe is None:
            progress(f"writing the test CoE under {root}")
        server = ServerProcess(build_coe(root / "coe") if coe is None else Path(coe), engine, root / "server.log")
        hostile = {"rate": hostile_rate, "slow_loris": slow_loris, "cases": tuple(cases)}
        report.update(_phases(server, requests, concurrency, max_tokens, hostile, zipf_s, seed, progress))
    finally:
        if tmp:
            tmp.cleanup()
    return report


def _phases(server: ServerProcess, requests: int, concurrency: int, max_tokens: int, hostile: dict,
            zipf_s: float, seed: int, progress: Callable[[str], None]) -> dict:
    """`hostile`: Hostile's keyword arguments (rate, slow_loris, cases)."""
    from coeflow.coefile import load_coe
    prompts = {e.name: list(e.examples) or EXAMPLES["general"] for e in load_coe(server.coe).experts}
    window = KillWindow()
    try:
        progress("starting the server")
        server.start()
        models = [m["id"] for m in httpx.get(f"{server.url}/v1/models").json()["data"]]
        for model in models:  # each expert's first load is not part of the quiet phase
            _ask(server.url, model, "hello", 2)
        before_kill = _ask(server.url, models[-1], EXAMPLES["sql"][0], 16)
        rss_before = server.rss_mb()
        plan = [Requests.zipf(requests, models, prompts, zipf_s, seed + i) for i in range(3)]
        progress(f"quiet: {requests} requests, {concurrency} clients")
        quiet = play(server.url, plan[0], concurrency, max_tokens, window)
        progress(f"hostile: {requests} requests beside the hostile clients")
        with Hostile(server.url, window=window, seed=seed, **hostile) as noisy_mix:
            noisy = play(server.url, plan[1], concurrency, max_tokens, window)
        time.sleep(DISCONNECT_SEEN_S)
        rss_after, outcomes = server.rss_mb(), _outcomes(server.url)
        progress(f"crash: {requests} requests beside the hostile clients, kill -9 and restart partway through")
        with Hostile(server.url, window=window, seed=seed + 1, **hostile) as crash_mix:
            crash = _crash_phase(server, plan[2], concurrency, max_tokens, window, progress)
        after_restart = _ask(server.url, models[-1], EXAMPLES["sql"][0], 16)
    finally:
        server.stop()
    phases = (quiet, noisy, crash)
    lat = {name: {"n": len(r.latencies), "p50_s": pct(r.latencies, 0.5), "p99_s": pct(r.latencies, 0.99)}
           for name, r in (("quiet", quiet), ("hostile", noisy), ("crash", crash))}
    return {
        "completed": sum(p.completed for p in phases),
        "failed_normal": sum(p.failed for p in phases),
        "failed_in_kill_window": crash.failed_in_kill_window,
        "normal_errors": [e for p in phases for e in p.errors][:10],
        "hostile": noisy_mix.by_status(),
        "hostile_by_case": noisy_mix.by_case(),
        "hostile_5xx": sum(n for mix in (noisy_mix, crash_mix) for status, n in mix.by_status().items()
                           if status.startswith("5")),
        "hostile_in_crash_phase": crash_mix.by_status(),
        "server_outcomes": outcomes,
        "latency": lat,
        "p99_hostile_over_quiet": lat["hostile"]["p99_s"] / lat["quiet"]["p99_s"],
        "rss_mb": {"before": rss_before, "after": rss_after},
        "restart_s": window.ready_at - window.killed_at,
        "same_answer_after_restart": before_kill == after_restart,
    }


def _outcomes(url: str) -> dict[str, int]:
    """The server's requests by outcome so far (ok, cancelled, failed, ...), from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families
    out: dict[str, int] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=30).text):
        for sample in family.samples:
            if sample.name == "coeflow_requests_total":
                out[sample.labels["outcome"]] = out.get(sample.labels["outcome"], 0) + int(sample.value)
    return dict(sorted(out.items()))


def _ask(url: str, model: str, prompt: str, max_tokens: int) -> str:
    """One greedy answer (the warm-up's, and the one compared before the kill and after the restart)."""
    r = httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
        "model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
        "temperature": 0})
    r.raise_for_status()
    return r.json()["choices"][0]["message"]["content"]


def _crash_phase(server: ServerProcess, requests: Requests, concurrency: int, max_tokens: int,
                 window: KillWindow, progress: Callable[[str], None]) -> NormalResult:
    """Play `requests`; once a quarter of them are answered, kill the server and start it again."""
    quarter = threading.Event()
    kill_after = max(1, len(requests.items) // 4)
    out: list[NormalResult] = []
    player = threading.Thread(target=lambda: out.append(play(
        server.url, requests, concurrency, max_tokens, window, on_done=lambda n: n >= kill_after and quarter.set())))
    player.start()
    while not quarter.wait(0.1):
        if not player.is_alive():
            raise RuntimeError("the crash phase's requests ended before a quarter of them were answered")
    window.killed_at = time.monotonic()
    server.kill()
    progress("killed; restarting")
    try:
        server.start()
    finally:  # were the restart to fail, the clients' failures from here on count, and they stop retrying
        window.ready_at = time.monotonic()
    player.join()
    return out[0]


def format_report(r: dict) -> str:
    q, h = r["latency"]["quiet"], r["latency"]["hostile"]
    return "\n".join([
        f"machine: {r['machine']}; {r['coe']}, engine {r['engine']}",
        f"{r['requests_per_phase']} well-formed requests a phase, {r['concurrency']} clients, Zipf s={r['zipf_s']}, "
        f"{r['max_tokens']} tokens; hostile {r['hostile_rate']:g}/s ({', '.join(r['cases'])}) and "
        f"{r['slow_loris']} slow-loris connections",
        f"completed {r['completed']}, failed_normal {r['failed_normal']} (must be 0), failed in the kill "
        f"window {r['failed_in_kill_window']} (retried); restart {r['restart_s']:.1f} s, same answer after it: "
        f"{r['same_answer_after_restart']}",
        f"latency quiet p50 {q['p50_s']:.3f} s p99 {q['p99_s']:.3f} s; with the hostile mix p50 {h['p50_s']:.3f} s "
        f"p99 {h['p99_s']:.3f} s ({r['p99_hostile_over_quiet']:.2f}x; target 1.5x)",
        f"hostile answers (hostile phase): {r['hostile']}; 5xx in any phase: {r['hostile_5xx']}",
        f"the server's requests by outcome before the kill: {r['server_outcomes']}",
        f"server RSS {r['rss_mb']['before']:.0f} MB before, {r['rss_mb']['after']:.0f} MB after the hostile phase",
    ])


