"""`coeflow eval tasks`: accuracy on held-out checkable tasks (demo/tasks.py), per domain and on
the mixed set, of every single expert, of the routed CoE, of oracle routing (each task to its
own domain's expert) and of a monolith if given (one model trained on every domain's tasks).
The CoE is served in this process and asked through the official client, greedily, as a user
would ask it; each answer is checked the way the demo's table checks it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from coeflow.demo.tasks import DOMAINS, Task, check, tasks
from coeflow.errors import ConfigError

MAX_TOKENS = {"math": 8, "sql": 48, "shell": 24, "python": 64, "general": 12}  # a right answer fits
ROUTED, ORACLE, MONOLITH = "coe", "oracle", "monolith"


@dataclass
class Row:
    system: str  # an expert's name, "coe" (routed), "oracle" (each task to its domain's expert), "monolith"
    domain: str  # a task domain, or "mixed" (all of them)
    n: int
    accuracy: float


def evaluate(coe_path: str | Path, n: int = 40, seed: int = 0, concurrency: int = 8, progress: bool = True,
             options=None, monolith: str | Path | None = None) -> dict:
    """`progress`: a bar on stderr; `options`: the server's (coeflow.server.ServerOptions;
    default: as `coeflow serve` serves); `monolith`: a CoE file of one expert (the demo's
    coe-monolith.yaml: one model trained on every domain's tasks with the experts' compute),
    asked every task as the system "monolith"."""
    from coeflow.coefile import load_coe
    from coeflow.server import ServerOptions

    coe = load_coe(coe_path)
    missing = [d for d in DOMAINS if d not in coe.expert_names]
    if missing:
        raise ConfigError(f"{coe.source}: eval tasks asks each task of its domain's expert, and this CoE has no "
                          f"expert named {', '.join(missing)} (the demo's experts are {', '.join(DOMAINS)})")
    single = None
    if monolith is not None:
        single = load_coe(monolith)
        if len(single.expert_names) != 1:
            raise ConfigError(f"{single.source}: --monolith wants a CoE file of one expert, and this one has "
                              f"{len(single.expert_names)} ({', '.join(single.expert_names)})")
    todo = [t for d in DOMAINS for t in tasks(d, "heldout", n, seed)]
    options = options or ServerOptions()
    results = _ask(coe.source, None, todo, options, concurrency, progress)
    if single is not None:
        results.update(_ask(single.source, single.expert_names[0], todo, options, concurrency, progress))
    rows = []
    for system, marks in results.items():
        for domain in DOMAINS + ("mixed",):
            got = [ok for ok, t in zip(marks, todo) if domain in ("mixed", t.domain)]
            rows.append(Row(system, domain, len(got), sum(got) / len(got)))
    report = {"coe": str(coe.source), "split": "heldout", "n_per_domain": n, "seed": seed,
              "rows": [asdict(r) for r in rows]}
    if single is not None:
        report["monolith"] = str(single.source)
    return report


def _ask(coe_file: Path, only: str | None, todo: list[Task], options, concurrency: int,
         progress: bool) -> dict[str, list[bool]]:
    """Serve `coe_file` and ask every task of each system: its experts, the routed CoE and
    oracle routing; or, with `only`, of that one expert, marked as "monolith"."""
    from openai import OpenAI
    from tqdm import tqdm

    from coeflow.server import build_server, serving

    srv = build_server(coe_file, options)
    if only is not None:
        systems = {MONOLITH: only}
    else:
        systems = {name: name for name in srv.coe.expert_names} | {ROUTED: ROUTED, ORACLE: ORACLE}
        if srv.router is None:
            del systems[ROUTED]
    with serving(srv) as url, tqdm(total=len(todo) * len(systems), desc="tasks", unit="answer", leave=False,
                                   disable=not progress) as bar:
        client = OpenAI(base_url=url, api_key=srv.opts.api_key or "eval", max_retries=2, timeout=300)

        def ask(model: str, task: Task) -> bool:
            r = client.chat.completions.create(
                model=task.domain if model == ORACLE else model, temperature=0, max_tokens=MAX_TOKENS[task.domain],
                messages=[{"role": "user", "content": task.prompt}])
            bar.update(1)  # tqdm's own lock keeps the count across threads
            return check(task, r.choices[0].message.content or "")

        results: dict[str, list[bool]] = {}
        with ThreadPoolExecutor(concurrency) as pool:  # several at once: the server batches them
            for system, model in systems.items():
                results[system] = list(pool.map(lambda t, m=model: ask(m, t), todo))
    return results


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
