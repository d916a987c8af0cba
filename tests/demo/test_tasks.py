"""The demo's checkable tasks: each check accepts a right answer written another way and
refuses wrong ones (answers written by hand here), and the held-out split shares no phrasing and
no values with the training one (how "no template leakage" is checked)."""

from __future__ import annotations

import re

import pytest

from coeflow.demo import tasks as T
from coeflow.demo.tasks import Task, check

CASES = [  # (task, right answers, wrong answers)
    (Task("math", "What is 17 * 23 + 4?", "395", "395"), ["395", "395.", " 395\nthat is all"], ["396", "17", ""]),
    (Task("sql", "How many users are from France?", "", "SELECT COUNT(*) FROM users WHERE country = 'France';"),
     ["select count(id) from users where country='France'", "SELECT COUNT(*) FROM users WHERE country = 'France'; --x"],
     ["SELECT COUNT(*) FROM users WHERE country = 'Japan';", "DROP TABLE users;", "SELECT nonsense", "France"]),
    (Task("shell", "List every file in /tmp, hidden ones too.", "", "ls -a /tmp"),
     ["ls -a /tmp", "ls /tmp -a", "ls -a /tmp\n# lists them"], ["ls /tmp", "ls -la /tmp", "rm -a /tmp", "ls -a '/tmp"]),
    (Task("python", "", "", "assert total([1, 2, 3]) == 6\nassert total([]) == 0"),
     ["def total(xs):\n    return sum(xs)\n", "```python\ndef total(xs):\n    s = 0\n    for x in xs:\n        s += x\n"
      "    return s\n```"],
     ["def total(xs):\n    return len(xs)\n", "def total(xs) return", "import os\ndef total(xs):\n    return sum(xs)\n",
      "def total(xs):\n    return open('/etc/passwd') and sum(xs)\n", "def total(xs):\n    return xs.__class__\n"]),
    (Task("general", "Spell garden backwards.", "nedrag", "nedrag"), ["nedrag", "nedrag."], ["garden", "Nedrag x", ""]),
]


@pytest.mark.parametrize("task,right,wrong", CASES, ids=[c[0].domain for c in CASES])
def test_checks_accept_right_answers_however_written_and_refuse_wrong_ones(task, right, wrong):
    assert all(check(task, a) for a in right), [a for a in right if not check(task, a)]
    assert not any(check(task, a) for a in wrong), [a for a in wrong if check(task, a)]


def test_a_python_answer_that_never_ends_fails_on_its_time_limit():
    task = Task("python", "", "", "assert f([1]) == 1")
    assert not T._check_python(task, "def f(xs):\n    while True:\n        pass\n", timeout_s=0.5)


@pytest.mark.parametrize("domain", T.DOMAINS)
def test_every_generated_task_is_done_by_its_own_answer(domain):
    for split in T.SPLITS:
        for task in T.tasks(domain, split, 30):
            assert check(task, task.answer), task


FRAMES = {"math": [T.MATH_FRAMES], "sql": list(T.SQL_FRAMES.values()), "shell": list(T.SHELL_FRAMES.values()),
          "python": [T.PYTHON_FRAMES], "general": [f for f, _ in T.GENERAL_KINDS.values()]}


def _pattern(frame: str) -> re.Pattern:
    return re.compile("^" + re.sub(r"\\\{\w+\\\}", ".+", re.escape(frame)) + "$")


@pytest.mark.parametrize("domain", T.DOMAINS)
def test_held_out_prompts_use_phrasings_and_values_the_training_ones_never_do(domain):
    train, held = T.tasks(domain, "train", 300), T.tasks(domain, "heldout", 300)
    for family in FRAMES[domain]:
        train_only, held_only = [_pattern(f) for f in family[0::2]], [_pattern(f) for f in family[1::2]]
        assert not any(p.match(t.prompt) for t in train for p in held_only)
        assert not any(p.match(t.prompt) for t in held for p in train_only)
    assert not {t.prompt for t in train} & {t.prompt for t in held}
    words = lambda ts: {w for t in ts for w in re.findall(r"[\w'*./-]+", t.prompt)}  # noqa: E731
    values = words(held) - words(train)
    assert values, "held-out prompts bring values of their own"


def test_held_out_numbers_are_of_another_range():
    numbers = lambda split: {int(n) for t in T.tasks("math", split, 200) for n in re.findall(r"\d+", t.prompt)}  # noqa: E731
    assert max(n for n in numbers("train") if n > 9) <= 49 and min(n for n in numbers("heldout") if n > 9) >= 50
