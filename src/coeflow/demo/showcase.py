"""`coeflow demo`: build the demo CoE if missing, serve it on loopback, send a handful of mixed
prompts through the official `openai` client and show what happened to each."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from coeflow.server.options import DEFAULT_HOST, DEFAULT_PORT

PROMPTS = [
    "Write a Python function that reverses a list.",
    "What is 17 * 23 + 4?",
    "Select all users older than 30 from the users table, ordered by name.",
    "How do I find every .log file under /var and delete the old ones?",
    "Tell me something about the history of the printing press.",
    "def parse_args(argv):",
    "A train travels 120 km in 2 hours. What is its speed?",
    "count the lines in a file with bash",
]


@dataclass
class Row:
    prompt: str
    expert: str
    confidence: float | None
    source_tier: str
    switch_s: float
    ttft_s: float
    tokens_per_s: float
    answer: str


def ask(url: str, prompts: list[str], max_tokens: int = 48, api_key: str = "demo") -> list[Row]:
    """One streamed chat request per prompt, model 'coe' (routed), timed at the client."""
    from openai import OpenAI
    client = OpenAI(base_url=url, api_key=api_key, max_retries=0, timeout=600)
    rows = []
    for p in prompts:
        t0 = time.perf_counter()
        first = last = None
        info: dict = {}
        parts, n = [], 0
        stream = client.chat.completions.create(model="coe", messages=[{"role": "user", "content": p}],
                                                max_tokens=max_tokens, temperature=0, stream=True)
        for chunk in stream:
            if chunk.model_extra and chunk.model_extra.get("coeflow"):
                info = chunk.model_extra["coeflow"]
            if chunk.choices and chunk.choices[0].delta.content:
                last = time.perf_counter()
                first = first or last
                parts.append(chunk.choices[0].delta.content)
                n += 1
        ttft = (first or time.perf_counter()) - t0
        rate = (n - 1) / (last - first) if n > 1 and last > first else float("nan")
        rows.append(Row(p, info.get("expert", "?"), info.get("confidence"), info.get("source_tier", "?"),
                        info.get("switch_s", 0.0), ttft, rate, "".join(parts)))
    return rows


def _cut(s: str, n: int) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


def format_rows(rows: list[Row]) -> str:
    head = f"{'prompt':42} {'expert':8} {'conf':>5} {'tier':6} {'switch':>8} {'TTFT':>8} {'tok/s':>6}  answer"
    lines = [head, "-" * len(head)]
    for r in rows:
        conf = f"{r.confidence:.2f}" if r.confidence is not None else "-"
        lines.append(f"{_cut(r.prompt, 42):42} {r.expert:8} {conf:>5} {r.source_tier:6} "
                     f"{r.switch_s * 1e3:6.1f}ms {r.ttft_s * 1e3:6.0f}ms {r.tokens_per_s:6.0f}  {_cut(r.answer, 48)}")
    return "\n".join(lines)


def run_demo(directory: str, opts, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, once: bool = False,
             seed: int = 0, quick: bool = False, say: Callable[[str], None] = print) -> list[Row]:
    from coeflow.demo.build import FULL, QUICK, build_demo
    from coeflow.server import build_server, serving
    result = build_demo(directory, seed, QUICK if quick else FULL)
    say(f"demo CoE: {result.coe_file}" + (" (cached)" if result.cached else f" (built in {result.seconds:.0f} s)"))
    srv = build_server(result.coe_file, opts)
    warm, srv.warm_up = srv.warm_up, []  # compiled below, before the clock starts on any prompt
    with serving(srv, host, port, log_level="warning") as url:
        if warm:
            say("compiling the decode step (once per model shape; cached on disk for later runs)")
            srv.scheduler.warm_up(warm)
        say(f"serving {len(srv.runtimes)} experts at {url} (model 'coe' routes; or name an expert)")
        rows = ask(url, PROMPTS, api_key=opts.api_key or "demo")
        say(format_rows(rows))
        if not once:
            say(f"\nstill serving at {url}; try:\n  curl {url}/chat/completions -H 'content-type: application/json' "
                "-d '{\"model\": \"coe\", \"messages\": [{\"role\": \"user\", \"content\": \"what is 6 * 7?\"}]}'\n"
                + (f"or open the web console: {url.removesuffix('/v1')}/\n" if srv.opts.console else "") + "Ctrl-C to stop.")
            try:
                threading.Event().wait()
            except KeyboardInterrupt:
                say("stopping")
    return rows
