"""Tasks with checkable answers, one family per demo expert: arithmetic with a computed answer
(math), English to SQL run in sqlite against a small database (sql), English to a shell command
line, parsed (shell), small Python functions run against unit tests (python), and word puzzles
(general). `coeflow eval tasks` asks them of every expert, of the routed CoE and of each
domain's own expert, and checks each answer the same way.

Each task is drawn from a seed and a split. The `train` and `heldout` splits share nothing a
model could copy: a prompt's wording is one choice from each of a few lists of parts (an opening,
a subject, an ending...), and a quarter of the combinations, picked by a hash, are held out, so a
held-out prompt is worded as no training prompt is (though from the same words, as a user would
reword a request); and its values (numbers of another range, other countries, names, files,
words) never appear in training. An expert that answers them has learnt the task, not the prompts."""

from __future__ import annotations

import ast
import functools
import hashlib
import random
import re
import shlex
import sqlite3
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

DOMAINS = ("math", "sql", "shell", "python", "general")
SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class Task:
    domain: str
    prompt: str
    answer: str  # a correct answer, as an expert should write it
    key: str  # what the check compares against (the number, the query, the command, the tests)
    wording: str = ""  # which combination of parts worded the prompt (no split shares one)


def tasks(domain: str, split: str, n: int, seed: int = 0, words: list[str] | None = None) -> list[Task]:
    """`n` tasks of `domain` from `split`, the same for the same seed. `words` (train split
    only): fill the value slots (countries, names, paths, words...) from these words, drawn
    afresh for every task, instead of the split's lists: a model trained on a few fixed values
    recalls them rather than reading the prompt's, and must then answer a held-out value with
    a training one."""
    if domain not in DOMAINS or split not in SPLITS:
        raise ValueError(f"domain must be one of {DOMAINS} and split one of {SPLITS}")
    if words is not None and split != "train":
        raise ValueError("words fill training tasks only: the held-out split keeps its own values")
    rng = random.Random(f"{domain}/{split}/{seed}" + ("/words" if words is not None else ""))
    make, slots = _MAKERS[domain], _Slots(split, words)
    return [make(rng, slots) for _ in range(n)]


def check(task: Task, output: str) -> bool:
    """Whether `output` (an expert's answer) does the task."""
    return _CHECKS[task.domain](task, output)


def _word(rng: random.Random, kind: str, parts: list[list[str]], split: str) -> tuple[str, str]:
    """(a prompt's wording, with {placeholders} left in; its id): one choice from each list of
    parts, drawn until the combination belongs to `split` (a quarter are held out, by hash)."""
    while True:
        choice = tuple(rng.randrange(len(p)) for p in parts)
        wording = f"{kind}:{'.'.join(map(str, choice))}"
        if _held_out(wording) == (split == "heldout"):
            return "".join(p[i] for p, i in zip(parts, choice)), wording


def _held_out(wording: str) -> bool:
    return int(hashlib.sha256(wording.encode()).hexdigest(), 16) % 4 == 0


def _split(items: list, split: str) -> list:
    """The first three quarters of `items` for training, the rest held out."""
    cut = len(items) * 3 // 4
    return items[:cut] if split == "train" else items[cut:]


class _Slots:
    """Where a task's values come from: its split's share of the lists below, or (for training)
    words drawn afresh each time, shaped as the slot wants them (a capitalised country, a path,
    a file name, an identifier...)."""

    def __init__(self, split: str, words: list[str] | None = None):
        self.split = split
        self.words: list[str] | None = None
        self.idents: list[str] = []
        self.letters: list[str] = []
        if words is not None:
            taken = {v.lower() for v in task_values()}  # a task's value is never a word to fill with, in any case
            self.words = [w for w in words if re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]{1,13}", w) and w.lower() not in taken]
            self.idents = [i for i in (w.lower().replace("-", "_").replace(".", "_") for w in self.words)
                           if i.isidentifier()]
            self.letters = [w.lower() for w in self.words if w.isalpha()]
            if not self.letters:
                raise ValueError("words: none of letters only to fill the slots with")

    def _pick(self, rng: random.Random, pool: list[str], shape: Callable[[random.Random, str], str],
              words: list[str] | None = None) -> str:
        if self.words is None:
            return rng.choice(_split(pool, self.split))
        while True:  # a word shaped into a slot can become a task's value ("tara", "*.xml"): drawn again
            value = shape(rng, rng.choice(words or self.words))
            if value not in task_values():
                return value

    def number(self, rng: random.Random, train: tuple[int, int], heldout: tuple[int, int], wide: list[int]) -> int:
        """A number of the split's range; filled from words, one of `wide` (never a held-out one)."""
        if self.words is not None:
            return rng.choice(wide)
        return rng.randint(*(train if self.split == "train" else heldout))

    def country(self, rng: random.Random) -> str:
        return self._pick(rng, COUNTRIES, lambda r, w: w.capitalize(), self.letters)

    def name(self, rng: random.Random) -> str:
        return self._pick(rng, NAMES, lambda r, w: w, self.idents)

    def directory(self, rng: random.Random) -> str:
        return self._pick(rng, DIRS, lambda r, w: "/" + "/".join([w] + r.sample(self.words, r.randint(0, 2))))

    def file(self, rng: random.Random) -> str:
        return self._pick(rng, FILES, lambda r, w: w + r.choice([".txt", ".log", ".py", ".md", ".csv", ".json", ""]))

    def pattern(self, rng: random.Random) -> str:
        return self._pick(rng, PATTERNS, lambda r, w: "*." + w[:r.randint(2, 4)].lower(), self.letters)

    def word(self, rng: random.Random) -> str:
        return self._pick(rng, WORDS, lambda r, w: w.lower(), self.letters)

    def python_name(self, rng: random.Random) -> str:
        return self._pick(rng, PYTHON_NAMES, lambda r, w: w, self.idents)

    def general_word(self, rng: random.Random) -> str:
        return self._pick(rng, GENERAL_WORDS, lambda r, w: w, self.letters)


@functools.cache
def task_values() -> frozenset[str]:
    """Every value the tasks' lists hold, in both splits."""
    return frozenset(v for pool in (COUNTRIES, NAMES, DIRS, FILES, PATTERNS, WORDS, PYTHON_NAMES, GENERAL_WORDS)
                     for v in pool)


# -- math: the answer is the number ------------------------------------------------------------
MATH_PARTS = [["What is ", "Compute ", "Work out ", "Calculate ", "Evaluate ", "Find ", "Tell me ", "Give me "],
              ["{e}", "the value of {e}", "the result of {e}", "the answer to {e}"], ["?", ".", "", " please."]]


def _math(rng: random.Random, slots: _Slots) -> Task:
    split = slots.split
    lo, hi = (2, 49) if split == "train" else (50, 99)  # held-out numbers are larger
    a, b, c = rng.randint(lo, hi), rng.randint(lo, hi), rng.randint(2, 9)
    expr = rng.choice([f"{a} + {b}", f"{a} - {b}", f"{a} * {c}", f"{a} + {b} * {c}", f"{a} * {c} - {b}"])
    value = eval(expr, {"__builtins__": {}})  # noqa: S307  our own arithmetic, digits and + - * only
    text, wording = _word(rng, "math", MATH_PARTS, split)
    return Task("math", text.format(e=expr), str(value), str(value), wording)


def _check_math(task: Task, output: str) -> bool:
    found = re.search(r"-?\d+", output)
    return found is not None and found.group() == task.key


# -- sql: the query returns the rows the reference query returns ---------------------------------
SCHEMA = """
CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);
CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER, amount INTEGER, year INTEGER);
"""
COUNTRIES = ["France", "Japan", "Brazil", "Canada", "Kenya", "India", "Spain", "Chile", "Norway", "Egypt", "Peru",
             "Italy", "Ghana", "Mexico", "Sweden", "Nepal", "Greece", "Poland", "Vietnam", "Morocco", "Ireland",
             "Austria", "Cuba", "Finland"]
NAMES = ["ann", "bob", "carla", "dev", "eve", "femi", "gus", "hana", "ivan", "jo", "kim", "lea", "max", "nia", "omar",
         "pia", "quinn", "raj", "sol", "tara", "uma", "vic", "wes", "yara"]
_ASK = ["How many ", "Count the ", "Give the number of ", "Tell me how many ", "Find how many ",
        "What is the number of "]
SQL_PARTS = {
    "count_country": [_ASK, ["users ", "people ", "customers ", "accounts "],
                      ["from ", "living in ", "based in ", "whose country is "], ["{country}"], ["?", ".", ""]],
    "older": [["List the names of ", "Show the names of ", "Which are the ", "Give me the names of ", "Name the "],
              ["users ", "people ", "customers "], ["older than ", "over ", "aged more than ", "above the age of "],
              ["{age}"], ["?", ".", ""]],
    "total_year": [["What is the total ", "Sum the ", "Add up the ", "Give the total ", "How much was the total "],
                   ["order amount ", "amount of orders ", "orders' amount ", "amount ordered "],
                   ["in ", "for ", "during ", "placed in "], ["{year}"], ["?", ".", ""]],
    "orders_of": [_ASK, ["orders ", "purchases ", "orders placed "], ["by ", "made by ", "from the user "],
                  ["{name}"], ["?", ".", ""]],
}
SQL_ANSWERS = {
    "count_country": "SELECT COUNT(*) FROM users WHERE country = '{country}';",
    "older": "SELECT name FROM users WHERE age > {age};",
    "total_year": "SELECT SUM(amount) FROM orders WHERE year = {year};",
    "orders_of": "SELECT COUNT(*) FROM orders JOIN users ON orders.user_id = users.id WHERE users.name = '{name}';",
}


def _sql(rng: random.Random, slots: _Slots) -> Task:
    split = slots.split
    kind = rng.choice(sorted(SQL_PARTS))
    values = {"country": slots.country(rng),
              "age": slots.number(rng, (20, 39), (40, 60), [*range(18, 40), *range(61, 100)]),
              "year": slots.number(rng, (2010, 2016), (2017, 2023), [*range(1950, 2017), *range(2024, 2061)]),
              "name": slots.name(rng)}
    query = SQL_ANSWERS[kind].format(**values)
    text, wording = _word(rng, kind, SQL_PARTS[kind], split)
    return Task("sql", text.format(**values), query, query, wording)


@functools.cache
def _database() -> sqlite3.Connection:
    """The small database every SQL task is run against, the same for every check, built so that
    different values give different answers (a query for the wrong country, name, year or age
    returns other rows): country k has k + 1 users, the named user j has j + 1 orders, ages are
    spread so that each age asked about gives another list, and amounts are drawn at random."""
    db = sqlite3.connect(":memory:", check_same_thread=False)  # read only, under _DB_LOCK
    db.executescript(SCHEMA)
    rng = random.Random("sql-db")
    users = [(name, COUNTRIES[j % len(COUNTRIES)]) for j, name in enumerate(NAMES)]  # one named user a country
    users += [(f"user{k}_{m}", country) for k, country in enumerate(COUNTRIES) for m in range(k)]
    for i, (name, country) in enumerate(users, 1):
        db.execute("INSERT INTO users VALUES (?, ?, ?, ?)", (i, name, country, 18 + (i * 7) % 61 + i // 61))
    order = 1
    for j in range(len(NAMES)):
        for _ in range(j + 1):
            db.execute("INSERT INTO orders VALUES (?, ?, ?, ?)", (order, j + 1, rng.randint(5, 500),
                                                                  rng.randint(2010, 2023)))
            order += 1
    return db


_DB_LOCK = threading.Lock()


def _rows(db: sqlite3.Connection, query: str) -> list | None:
    try:
        with _DB_LOCK:
            return sorted(map(tuple, db.execute(query).fetchall()), key=repr)
    except sqlite3.Error:  # a bad query, or several statements (none of them is run)
        return None


def _check_sql(task: Task, output: str) -> bool:
    query = output.strip().split(";")[0].strip()
    if not query.upper().startswith("SELECT"):
        return False  # only reads: an answer is never run as anything else
    db = _database()
    got = _rows(db, query)
    return got is not None and got == _rows(db, task.key)


# -- shell: the command line, parsed, is the reference's --------------------------------------------
SHELL_PARTS = {
    "list": [["List ", "Show ", "Display ", "Print "], ["every file in ", "all files in ", "the contents of "],
             ["{d}"], [", hidden ones too", " including dotfiles", " with hidden entries", " and the hidden files"],
             [".", "", "?"]],
    "count": [["Count ", "Give the count of ", "Print the number of ", "Tell me the number of "],
              ["the lines in ", "lines of ", "the lines of "], ["{f}"], [".", "", "?"]],
    "find": [["Find ", "Search for ", "Locate ", "List "], ["files named ", "every file called ", "the files matching "],
             ["{p}"], [" under ", " inside ", " below ", " in "], ["{d}"], [".", "", "?"]],
    "grep": [["Search for ", "Find ", "Show lines with ", "Print lines matching "], ["{w}"],
             [" in ", " inside ", " within "], ["{f}"], [".", "", "?"]],
    "mkdir": [["Create ", "Make ", "Set up ", "Add "], ["the directory ", "the folder ", "a directory at "], ["{d}"],
              [", parents too", " with its parents", " and any missing parents", ", creating parents as needed"],
              [".", ""]],
}
SHELL_ANSWERS = {"list": "ls -a {d}", "count": "wc -l {f}", "find": "find {d} -name '{p}'", "grep": "grep {w} {f}",
                 "mkdir": "mkdir -p {d}"}
DIRS = ["/tmp", "/var/log", "/etc", "/srv/data", "/home/ann", "/opt/app", "/usr/share", "/mnt/backup", "/srv/www",
        "/home/bob/src", "/var/cache", "/opt/tools", "/data/raw", "/home/eve/docs", "/var/lib/db", "/usr/local/bin"]
FILES = ["notes.txt", "app.log", "data.csv", "README.md", "main.py", "report.txt", "config.ini", "todo.md",
         "server.log", "index.html", "setup.cfg", "users.json", "errors.txt", "build.sh", "schema.sql", "LICENSE"]
PATTERNS = ["*.py", "*.log", "*.txt", "*.csv", "*.json", "*.md", "*.sh", "*.yaml", "*.html", "*.sql", "*.ini",
            "*.tmp", "*.bak", "*.cfg", "*.xml", "*.toml"]
WORDS = ["error", "warning", "timeout", "user", "token", "failed", "retry", "admin", "denied", "config", "session",
         "cache", "panic", "fatal", "login", "refused"]


def _shell(rng: random.Random, slots: _Slots) -> Task:
    split = slots.split
    kind = rng.choice(sorted(SHELL_PARTS))
    values = {"d": slots.directory(rng), "f": slots.file(rng), "p": slots.pattern(rng), "w": slots.word(rng)}
    command = SHELL_ANSWERS[kind].format(**values)
    text, wording = _word(rng, kind, SHELL_PARTS[kind], split)
    return Task("shell", text.format(**values), command, command, wording)


def _argv(line: str) -> tuple[str, frozenset, tuple] | None:
    """(program, its flags, its other arguments in order): a command line compared by meaning,
    so flags may come in any order (`ls -a /tmp` is `ls /tmp -a`)."""
    try:
        words = shlex.split(line.strip().splitlines()[0] if line.strip() else "")
    except ValueError:
        return None
    if not words:
        return None
    flags = frozenset(w for w in words[1:] if w.startswith("-") and w not in ("-name",))
    args = tuple(w for w in words[1:] if w not in flags)
    return words[0], flags, args


def _check_shell(task: Task, output: str) -> bool:
    got = _argv(output)
    return got is not None and got == _argv(task.key)


# -- python: the function passes the tests -----------------------------------------------------------
PYTHON_TASKS = [  # (what it does, the body, tests as (arguments, result))
    ("returns the sum of the numbers in a list", "return sum(xs)", [("[1, 2, 3]", "6"), ("[]", "0")]),
    ("returns the largest number in a list", "return max(xs)", [("[3, 9, 2]", "9"), ("[-1, -5]", "-1")]),
    ("returns the list reversed", "return xs[::-1]", [("[1, 2, 3]", "[3, 2, 1]"), ("[]", "[]")]),
    ("returns how many items of a list are even", "return sum(1 for x in xs if x % 2 == 0)",
     [("[1, 2, 4]", "2"), ("[1, 3]", "0")]),
    ("returns the list without duplicates, in first-seen order", "return list(dict.fromkeys(xs))",
     [("[1, 2, 1, 3]", "[1, 2, 3]"), ("[5, 5]", "[5]")]),
    ("returns the numbers of a list doubled", "return [2 * x for x in xs]", [("[1, 2]", "[2, 4]"), ("[]", "[]")]),
    ("returns the smallest number in a list", "return min(xs)", [("[3, 9, 2]", "2"), ("[7]", "7")]),
    ("returns the list sorted from small to large", "return sorted(xs)", [("[3, 1, 2]", "[1, 2, 3]"), ("[]", "[]")]),
]
PYTHON_PARTS = [["Write ", "Define ", "Implement ", "Give me ", "Code "],
                ["a Python function ", "a function ", "in Python a function ", "the Python function "],
                ["{name}(xs)", "called {name}, taking a list xs,", "{name} with one argument xs"],
                [" that ", " which ", ": it "], ["{what}"], [".", ""]]
PYTHON_NAMES = ["f", "g", "h", "fn", "func", "calc", "solve", "compute", "helper", "process", "run", "go", "do_it",
                "work", "transform", "handle", "apply_it", "step", "proc", "task_fn", "my_func", "util", "op", "main_fn"]


def _python(rng: random.Random, slots: _Slots) -> Task:
    split = slots.split
    what, body, tests = rng.choice(PYTHON_TASKS)
    name = slots.python_name(rng)
    code = f"def {name}(xs):\n    {body}\n"
    asserts = "\n".join(f"assert {name}({args}) == {result}" for args, result in tests)
    text, wording = _word(rng, "python", PYTHON_PARTS, split)
    return Task("python", text.format(name=name, what=what), code, asserts, wording)


# What no answer to these tasks needs, and an answer that misbehaves could use: refused unrun.
_FORBIDDEN_CALLS = {"open", "exec", "eval", "compile", "__import__", "getattr", "setattr", "delattr", "globals",
                    "locals", "vars", "input", "breakpoint", "exit", "quit"}


def _harmless(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.Global, ast.Nonlocal)):
            return False
        if isinstance(node, ast.Name) and node.id in _FORBIDDEN_CALLS:
            return False
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            return False
    return True


def _check_python(task: Task, output: str, timeout_s: float = 5.0) -> bool:
    """The answer's code, then the tests, run in a fresh interpreter with a time limit. The
    answer is a model's: it is never run in this process, and code that imports, opens files,
    evaluates strings or reaches for dunder attributes (none of which these tasks need) is
    refused without being run. This is a guard, not a sandbox: evaluate models you trust."""
    code = _code_block(output)
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    if not _harmless(tree):
        return False
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "answer.py"
        script.write_text(code + "\n\n" + task.key + "\n")
        try:
            done = subprocess.run([sys.executable, "-I", str(script)], cwd=tmp, capture_output=True,
                                  timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
    return done.returncode == 0


def _code_block(output: str) -> str:
    fenced = re.search(r"```(?:python)?\n(.*?)```", output, re.S)
    return fenced.group(1) if fenced else output


# -- general: word puzzles ---------------------------------------------------------------------------
GENERAL_KINDS = {  # (the request's parts, the answer from the word)
    "reverse": ([["Spell ", "Write ", "Give "], ["{w}"], [" backwards", " in reverse", " reversed", " from the end"],
                 [".", "", "?"]], lambda w: w[::-1]),
    "upper": ([["Write ", "Give ", "Print ", "Spell "], ["{w}"], [" in capital letters", " in upper case",
               " in all caps", " uppercased"], [".", "", "?"]], str.upper),
    "first": ([["What is the first letter of ", "Which letter starts ", "Give the initial of ", "First letter of "],
               ["{w}"], ["?", ".", ""]], lambda w: w[0]),
    "length": ([["How many letters are in ", "Count the letters of ", "What is the length of ", "Letters in "],
                ["{w}", "the word {w}"], ["?", ".", ""]], lambda w: str(len(w))),
}
GENERAL_WORDS = ["garden", "planet", "silver", "window", "candle", "forest", "bridge", "pencil", "rocket", "meadow",
                 "harbor", "lantern", "puzzle", "violet", "thunder", "compass", "marble", "island", "copper", "falcon",
                 "ribbon", "saddle", "tunnel", "walnut", "anchor", "basket", "cactus", "dragon", "engine", "feather",
                 "glacier", "hammer"]


def _general(rng: random.Random, slots: _Slots) -> Task:
    split = slots.split
    kind = rng.choice(sorted(GENERAL_KINDS))
    parts, answer = GENERAL_KINDS[kind]
    word = slots.general_word(rng)
    value = answer(word)
    text, wording = _word(rng, kind, parts, split)
    return Task("general", text.format(w=word), value, value, wording)


def _check_general(task: Task, output: str) -> bool:
    words = re.findall(r"[A-Za-z0-9]+", output)
    return bool(words) and words[0] == task.key


_MAKERS: dict[str, Callable[[random.Random, _Slots], Task]] = {
    "math": _math, "sql": _sql, "shell": _shell, "python": _python, "general": _general}
_CHECKS: dict[str, Callable[[Task, str], bool]] = {
    "math": _check_math, "sql": _check_sql, "shell": _check_shell, "python": _check_python,
    "general": _check_general}
