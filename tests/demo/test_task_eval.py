"""`coeflow eval tasks` end to end on a served CoE of five random-weight experts named as the
demo's: every system answers every task, and oracle routing's answers are its domain expert's
own (the same greedy answers, so the same marks)."""

from __future__ import annotations

import yaml

import coeflow.demo.task_eval as task_eval
from checkpoints import make_checkpoint
from coeflow.demo.tasks import DOMAINS

EXAMPLES = {"math": ["what is 3 + 4", "compute 12 * 7", "work out 9 - 2"],
            "sql": ["how many users are from spain", "sum the order amounts", "list users older than 30"],
            "shell": ["count the lines in notes.txt", "list files in /tmp", "make the directory /srv/x"],
            "python": ["write a python function that sums a list", "define f(xs) in python", "python function"],
            "general": ["spell garden backwards", "uppercase the word candle", "first letter of window"]}


def _coe(root):
    from coeflow.coefile import load_coe
    from coeflow.router import examples_from_coe, train_router
    experts = []
    for i, name in enumerate(DOMAINS):
        make_checkpoint(root / name, "llama-gqa", seed=40 + i)
        experts.append({"name": name, "path": name, "examples": EXAMPLES[name]})
    (root / "coe.yaml").write_text(yaml.safe_dump({"name": "tasks", "fallback": "general", "experts": experts}))
    coe = load_coe(root / "coe.yaml")
    train_router(examples_from_coe(coe), coe.expert_names, coe.fallback, folds=3).save(coe.router_dir)
    return root / "coe.yaml"


def test_every_system_answers_and_oracle_marks_equal_the_domain_experts(tmp_path, monkeypatch):
    from coeflow.server import ServerOptions
    # random weights get nothing right: mark an answer by its own text instead, so marks differ
    monkeypatch.setattr(task_eval, "check", lambda task, output: len(output) % 2 == 0)
    report = task_eval.evaluate(_coe(tmp_path), n=3, seed=1, progress=False,
                                options=ServerOptions(fused=False, warm_up=False))
    rows = {(r["system"], r["domain"]): r for r in report["rows"]}
    systems = list(DOMAINS) + ["coe", "oracle"]
    assert {s for s, _ in rows} == set(systems) and {d for _, d in rows} == set(DOMAINS) | {"mixed"}
    assert all(r["n"] == (15 if r["domain"] == "mixed" else 3) and 0 <= r["accuracy"] <= 1 for r in rows.values())
    for d in DOMAINS:
        assert rows[("oracle", d)]["accuracy"] == rows[(d, d)]["accuracy"]
    for s in systems:
        mean = sum(rows[(s, d)]["accuracy"] for d in DOMAINS) / len(DOMAINS)
        assert abs(rows[(s, "mixed")]["accuracy"] - mean) < 1e-9
    assert "oracle" in task_eval.format_table(report)


def test_a_monolith_answers_every_task_beside_the_coe(tmp_path, monkeypatch):
    """--monolith: a CoE file of one expert, asked every task as the system "monolith"; here it
    is the math expert's checkpoint, so its marks are the math expert's own."""
    from coeflow.server import ServerOptions
    monkeypatch.setattr(task_eval, "check", lambda task, output: len(output) % 2 == 0)
    coe = _coe(tmp_path)
    (tmp_path / "mono.yaml").write_text(yaml.safe_dump({"name": "mono", "fallback": "one", "router": "none/",
                                                         "experts": [{"name": "one", "path": "math"}]}))
    report = task_eval.evaluate(coe, n=2, seed=1, progress=False, options=ServerOptions(fused=False, warm_up=False),
                                monolith=tmp_path / "mono.yaml")
    rows = {(r["system"], r["domain"]): r["accuracy"] for r in report["rows"]}
    assert {s for s, _ in rows} == set(DOMAINS) | {"coe", "oracle", "monolith"}
    assert all(rows[("monolith", d)] == rows[("math", d)] for d in list(DOMAINS) + ["mixed"])
    assert "monolith" in task_eval.format_table(report)


def test_a_monolith_file_of_several_experts_is_refused(tmp_path):
    import pytest

    from coeflow.errors import ConfigError
    coe = _coe(tmp_path)
    with pytest.raises(ConfigError, match="one expert, and this one has 5"):
        task_eval.evaluate(coe, n=1, monolith=coe)


def test_a_coe_without_the_demos_experts_is_refused(coe_file):
    import pytest

    from coeflow.errors import ConfigError
    with pytest.raises(ConfigError, match="no expert named math"):
        task_eval.evaluate(coe_file, n=1)
