"""`coeflow demo`: build the demo CoE if missing, serve it on loopback, send eight held-out tasks
of mixed domains (demo/tasks.py: never seen in training, answers checked) through the official
`openai` client, show what happened to each and whether its answer is right, and close with the
build's `eval tasks` figures: the routed CoE against the best single expert and the monolith."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from coeflow.demo.build import MONOLITH_FILE, TASKS_EVAL
from coeflow.demo.task_eval import MAX_TOKENS
from coeflow.demo.tasks import DOMAINS, Task, check, tasks
from coeflow.server.options import DEFAULT_HOST, DEFAULT_PORT

SHOWCASE_SEED = 7  # which held-out tasks the table shows: drawn once, the same every run
SHOWCASE_DOMAINS = ("python", "sql", "shell", "math", "general", "sql", "shell", "python")


def showcase_tasks() -> list[Task]:
    """The table's eight prompts: held-out tasks, two each of python, sql and shell, one each of
    math and general, in an order that switches experts at every row."""
    drawn = {d: iter(tasks(d, "heldout", SHOWCASE_DOMAINS.count(d), SHOWCASE_SEED)) for d in DOMAINS}
    return [next(drawn[d]) for d in SHOWCASE_DOMAINS]


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
    right: bool


def ask(url: str, todo: list[Task], api_key: str = "demo") -> list[Row]:
    """One streamed chat request per task, model 'coe' (routed), timed at the client; each answer
    checked as `coeflow eval tasks` checks it."""
    from openai import OpenAI
    client = OpenAI(base_url=url, api_key=api_key, max_retries=0, timeout=600)
    rows = []
    for task in todo:
        t0 = time.perf_counter()
        first = last = None
        info: dict = {}
        parts, n = [], 0
        stream = client.chat.completions.create(model="coe", messages=[{"role": "user", "content": task.prompt}],
                                                max_tokens=MAX_TOKENS[task.domain], temperature=0, stream=True)
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
        answer = "".join(parts)
        rows.append(Row(task.prompt, info.get("expert", "?"), info.get("confidence"), info.get("source_tier", "?"),
                        info.get("switch_s", 0.0), ttft, rate, answer, check(task, answer)))
    return rows


def _cut(s: str, n: int) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


def format_rows(rows: list[Row]) -> str:
    head = (f"{'prompt':42} {'expert':8} {'conf':>5} {'tier':6} {'switch':>8} {'TTFT':>8} {'tok/s':>6} "
            f"{'right':5}  answer")
    lines = [head, "-" * len(head)]
    for r in rows:
        conf = f"{r.confidence:.2f}" if r.confidence is not None else "-"
        lines.append(f"{_cut(r.prompt, 42):42} {r.expert:8} {conf:>5} {r.source_tier:6} "
                     f"{r.switch_s * 1e3:6.1f}ms {r.ttft_s * 1e3:6.0f}ms {r.tokens_per_s:6.0f} "
                     f"{'yes' if r.right else 'no':5}  {_cut(r.answer, 48)}")
    lines.append(f"{sum(r.right for r in rows)} of {len(rows)} answers right (held-out tasks: never seen in training)")
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
        rows = ask(url, showcase_tasks(), api_key=opts.api_key or "demo")
        say(format_rows(rows))
        say(closing_line(result.directory))
        if not once:
            say(f"\nstill serving at {url}; try:\n  curl {url}/chat/completions -H 'content-type: application/json' "
                "-d '{\"model\": \"coe\", \"messages\": [{\"role\": \"user\", \"content\": \"what is 6 * 7?\"}]}'\n"
                + (f"or open the web console: {url.removesuffix('/v1')}/\n" if srv.opts.console else "") + "Ctrl-C to stop.")
            try:
                threading.Event().wait()
            except KeyboardInterrupt:
                say("stopping")
    return rows


def closing_line(directory: str | Path) -> str:
    """The build's `eval tasks` figures (data/tasks_eval.json): the routed CoE against the best
    single expert and the monolith on the mixed held-out set."""
    d = Path(directory)
    again = f"coeflow eval tasks --coe {d / 'coe.yaml'} --monolith {d / MONOLITH_FILE}"
    try:
        report = json.loads((d / TASKS_EVAL).read_text())
        mixed = {r["system"]: r["accuracy"] for r in report["rows"] if r["domain"] == "mixed"}
        best = max((s for s in mixed if s in DOMAINS), key=mixed.__getitem__)
        figures = [f"routed CoE {100 * mixed['coe']:.0f}%", f"best single expert ({best}) {100 * mixed[best]:.0f}%",
                   f"monolith of the same training compute {100 * mixed['monolith']:.0f}%",
                   f"oracle routing {100 * mixed['oracle']:.0f}%"]
    except (OSError, ValueError, KeyError):
        return f"for accuracy on held-out tasks, run: {again}"
    return (f"held-out tasks, {report['n_per_domain']} a domain, right answers: " + ", ".join(figures)
            + f" (again: {again})")
