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
     ["SELECT COUNT(*) FROM users WHERE country = 'Atlantis';", "DROP TABLE users;", "SELECT nonsense", "France"]),
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


POOLS = {"math": [], "sql": T.COUNTRIES + T.NAMES, "shell": T.DIRS + T.FILES + T.PATTERNS + T.WORDS,
         "python": T.PYTHON_NAMES, "general": T.GENERAL_WORDS}  # the values each domain's prompts carry


def _values(domain: str) -> re.Pattern:
    values = sorted(POOLS[domain], key=len, reverse=True) or ["(?!)"]
    return re.compile("|".join(r"(?<![\w/.*])" + (re.escape(v) if POOLS[domain] else v) + r"(?![\w/])"
                               for v in values))


def _skeleton(domain: str, prompt: str) -> str:
    """The prompt's wording alone: every value (a country, a name, a file...) and number blanked."""
    return re.sub(r"\d+", "#", _values(domain).sub("_", prompt))


@pytest.mark.parametrize("domain", T.DOMAINS)
def test_held_out_prompts_are_worded_as_no_training_prompt_is_and_bring_values_of_their_own(domain):
    train, held = T.tasks(domain, "train", 400), T.tasks(domain, "heldout", 400)
    assert not {t.wording for t in train} & {t.wording for t in held}
    assert not {_skeleton(domain, t.prompt) for t in train} & {_skeleton(domain, t.prompt) for t in held}
    assert len({_skeleton(domain, t.prompt) for t in held}) >= 10  # and they are many
    seen = {v for t in train for v in _values(domain).findall(t.prompt)}
    assert not {v for t in held for v in _values(domain).findall(t.prompt)} & seen


def test_held_out_numbers_are_of_another_range():
    numbers = lambda split: {int(n) for t in T.tasks("math", split, 200) for n in re.findall(r"\d+", t.prompt)}  # noqa: E731
    assert max(n for n in numbers("train") if n > 9) <= 49 and min(n for n in numbers("heldout") if n > 9) >= 50


def test_a_sql_answer_with_the_right_shape_but_another_value_is_wrong():
    """The database gives each country, name, year and age its own answer, so a query that only
    gets the template right is not counted."""
    for task in T.tasks("sql", "heldout", 60):
        for other in T.COUNTRIES + T.NAMES + [str(y) for y in range(2010, 2024)] + [str(a) for a in range(20, 61)]:
            for value in re.findall(r"'(\w+)'|(\d{2,4})", task.key):
                old = value[0] or value[1]
                if other != old:
                    assert not check(task, task.key.replace(old, other)), (task.key, other)


@pytest.mark.parametrize("domain", ["sql", "shell", "python", "general"])
def test_training_tasks_filled_from_words_carry_those_words_and_no_task_value(domain):
    """What the experts train on: values drawn afresh from other words, so an expert must copy the
    prompt's value (none of the task lists, held-out ones included, ever appears)."""
    # no value starts with a digit or has a space; the last four would make task values once shaped
    words = ["amber", "lotus", "quartz", "tundra", "velvet", "x_1", "2019", "zz qq", "Tara", "xmlrpc", "login", "cuba"]
    drawn = T.tasks(domain, "train", 60, words=words)
    assert all(check(t, t.answer) for t in drawn)
    found = {w for t in drawn for w in words if w in t.prompt.lower()}
    assert {"amber", "lotus", "quartz", "tundra", "velvet"} <= found and not {"2019", "zz qq"} & found
    assert not any(_values(domain).search(t.prompt) for t in drawn)
    if domain == "sql":  # ages and years spread wider than the split's, never into the held-out ones
        numbers = {int(n) for t in drawn for n in re.findall(r"\d+", t.prompt)}
        assert numbers - set(range(20, 40)) - set(range(2010, 2017))
        assert not numbers & (set(range(40, 61)) | set(range(2017, 2024)))
    assert T.tasks(domain, "train", 60, words=words) == drawn  # deterministic for the seed
    with pytest.raises(ValueError, match="training tasks only"):
        T.tasks(domain, "heldout", 1, words=words)
