"""`coeflow eval tasks`: accuracy on held-out checkable tasks (demo/tasks.py), per domain and on
the mixed set, of every single expert, of the routed CoE and of oracle routing (each task to its
own domain's expert). The CoE is served in this process and asked through the official client,
greedily, as a user would ask it; each answer is checked the way the demo's table checks it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from coeflow.demo.tasks import DOMAINS, Task, check, tasks
from coeflow.errors import ConfigError

MAX_TOKENS = {"math": 8, "sql": 48, "shell": 24, "python": 64, "general": 12}  # a right answer fits
ROUTED, ORACLE = "coe", "oracle"


@dataclass
class Row:
    system: str  # an expert's name, "coe" (routed) or "oracle" (each task to its domain's expert)
    domain: str  # a task domain, or "mixed" (all of them)
    n: int
    accuracy: float


def evaluate(coe_path: str | Path, n: int = 40, seed: int = 0, concurrency: int = 8, progress: bool = True,
             options=None) -> dict:
    """`progress`: a bar on stderr; `options`: the server's (coeflow.server.ServerOptions;
    default: as `coeflow serve` serves)."""
    from openai import OpenAI
    from tqdm import tqdm

    from coeflow.coefile import load_coe
    from coeflow.server import ServerOptions, build_server, serving

    coe = load_coe(coe_path)
    missing = [d for d in DOMAINS if d not in coe.expert_names]
    if missing:
        raise ConfigError(f"{coe.source}: eval tasks asks each task of its domain's expert, and this CoE has no "
                          f"expert named {', '.join(missing)} (the demo's experts are {', '.join(DOMAINS)})")
    todo = [t for d in DOMAINS for t in tasks(d, "heldout", n, seed)]
    systems = list(coe.expert_names) + [ROUTED, ORACLE]
    srv = build_server(coe.source, options or ServerOptions())
    if srv.router is None:
        systems.remove(ROUTED)
    with serving(srv) as url, tqdm(total=len(todo) * len(systems), desc="tasks", unit="answer", leave=False,
                                   disable=not progress) as bar:
        client = OpenAI(base_url=url, api_key=srv.opts.api_key or "eval", max_retries=2, timeout=300)

        def ask(system: str, task: Task) -> bool:
            r = client.chat.completions.create(
                model=task.domain if system == ORACLE else system, temperature=0, max_tokens=MAX_TOKENS[task.domain],
                messages=[{"role": "user", "content": task.prompt}])
            bar.update(1)  # tqdm's own lock keeps the count across threads
            return check(task, r.choices[0].message.content or "")

        results: dict[str, list[bool]] = {}
        with ThreadPoolExecutor(concurrency) as pool:  # several at once: the server batches them
            for system in systems:
                results[system] = list(pool.map(lambda t, s=system: ask(s, t), todo))
    rows = []
    for system in systems:
        marks = results[system]
        for domain in DOMAINS + ("mixed",):
            got = [ok for ok, t in zip(marks, todo) if domain in ("mixed", t.domain)]
            rows.append(Row(system, domain, len(got), sum(got) / len(got)))
    return {"coe": str(coe.source), "split": "heldout", "n_per_domain": n, "seed": seed,
            "rows": [asdict(r) for r in rows]}


def format_table(report: dict) -> str:
    """Systems down, domains across, accuracy in percent."""
    domains = list(DOMAINS) + ["mixed"]
    by = {(r["system"], r["domain"]): r["accuracy"] for r in report["rows"]}
    systems = list(dict.fromkeys(r["system"] for r in report["rows"]))
    lines = [f"held-out tasks, {report['n_per_domain']} per domain (seed {report['seed']}): accuracy %",
             f"{'system':10}" + "".join(f"{d:>9}" for d in domains)]
    for s in systems:
        lines.append(f"{s:10}" + "".join(f"{100 * by[(s, d)]:9.1f}" for d in domains))
    return "\n".join(lines)
