"""Tasks with checkable answers, one family per demo expert: arithmetic with a computed answer
(math), English to SQL run in sqlite against a small database (sql), English to a shell command
line, parsed (shell), small Python functions run against unit tests (python), and word puzzles
(general). `coeflow eval tasks` asks them of every expert, of the routed CoE and of each
domain's own expert, and checks each answer the same way.

Each task is drawn from a seed and a split. The `train` and `heldout` splits share nothing a
model could copy: the held-out prompts use phrasings the training ones never do (each family's
frames are split in two), and different values (numbers of another range, other names, other
files and words), so an expert that answers them has learnt the task, not the prompts."""

from __future__ import annotations

import ast
import random
import re
import shlex
import sqlite3
import subprocess
import sys
import tempfile
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


def tasks(domain: str, split: str, n: int, seed: int = 0) -> list[Task]:
    """`n` tasks of `domain` from `split`, the same for the same seed."""
    if domain not in DOMAINS or split not in SPLITS:
        raise ValueError(f"domain must be one of {DOMAINS} and split one of {SPLITS}")
    rng = random.Random(f"{domain}/{split}/{seed}")
    make = _MAKERS[domain]
    return [make(rng, split) for _ in range(n)]


def check(task: Task, output: str) -> bool:
    """Whether `output` (an expert's answer) does the task."""
    return _CHECKS[task.domain](task, output)


def _frame(rng: random.Random, frames: list[str], split: str) -> str:
    """Even-numbered frames are the training ones, odd the held-out ones."""
    return rng.choice(frames[split == "heldout"::2])


# -- math: the answer is the number ------------------------------------------------------------
MATH_FRAMES = ["What is {e}?", "Work out {e}.", "Compute {e}.", "{e} equals what?", "Calculate {e}.",
               "What do you get for {e}?", "Evaluate {e}.", "Find the value of {e}."]


def _math(rng: random.Random, split: str) -> Task:
    lo, hi = (2, 49) if split == "train" else (50, 99)  # held-out numbers are larger
    a, b, c = rng.randint(lo, hi), rng.randint(lo, hi), rng.randint(2, 9)
    expr = rng.choice([f"{a} + {b}", f"{a} - {b}", f"{a} * {c}", f"{a} + {b} * {c}", f"{a} * {c} - {b}"])
    value = eval(expr, {"__builtins__": {}})  # noqa: S307  our own arithmetic, digits and + - * only
    return Task("math", _frame(rng, MATH_FRAMES, split).format(e=expr), str(value), str(value))


def _check_math(task: Task, output: str) -> bool:
    found = re.search(r"-?\d+", output)
    return found is not None and found.group() == task.key


# -- sql: the query returns the rows the reference query returns ---------------------------------
SCHEMA = """
CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);
CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER, amount INTEGER, year INTEGER);
"""
COUNTRIES = ["France", "Japan", "Brazil", "Canada", "Kenya", "India", "Spain", "Chile", "Norway", "Egypt"]
NAMES = ["ann", "bob", "carla", "dev", "eve", "femi", "gus", "hana", "ivan", "jo", "kim", "lea"]
SQL_FRAMES = {
    "count_country": ["How many users are from {country}?", "Count the users whose country is {country}.",
                      "Give the number of users living in {country}.", "What is the user count for {country}?"],
    "older": ["List the names of users older than {age}.", "Which users are above {age} years old? Give names.",
              "Show names of users with age greater than {age}.", "Names of the users over {age}, please."],
    "total_year": ["What is the total order amount in {year}?", "Sum the amounts of orders placed in {year}.",
                   "Add up all order amounts for the year {year}.", "How much was ordered in total in {year}?"],
    "orders_of": ["How many orders has {name} placed?", "Count the orders of the user named {name}.",
                  "Give the number of orders made by {name}.", "What is {name}'s order count?"],
}
SQL_ANSWERS = {
    "count_country": "SELECT COUNT(*) FROM users WHERE country = '{country}';",
    "older": "SELECT name FROM users WHERE age > {age};",
    "total_year": "SELECT SUM(amount) FROM orders WHERE year = {year};",
    "orders_of": "SELECT COUNT(*) FROM orders JOIN users ON orders.user_id = users.id WHERE users.name = '{name}';",
}


def _sql(rng: random.Random, split: str) -> Task:
    kind = rng.choice(sorted(SQL_FRAMES))
    half = len(COUNTRIES) // 2
    values = {"country": rng.choice(COUNTRIES[:half] if split == "train" else COUNTRIES[half:]),
              "age": rng.randint(20, 39) if split == "train" else rng.randint(40, 60),
              "year": rng.randint(2010, 2016) if split == "train" else rng.randint(2017, 2023),
              "name": rng.choice(NAMES[:6] if split == "train" else NAMES[6:])}
    query = SQL_ANSWERS[kind].format(**values)
    return Task("sql", _frame(rng, SQL_FRAMES[kind], split).format(**values), query, query)


def _database() -> sqlite3.Connection:
    """The small database every SQL task is run against: fixed rows, the same for every check."""
    db = sqlite3.connect(":memory:")
    db.executescript(SCHEMA)
    rng = random.Random("sql-db")
    for i, name in enumerate(NAMES, 1):
        db.execute("INSERT INTO users VALUES (?, ?, ?, ?)", (i, name, COUNTRIES[i % len(COUNTRIES)], 18 + 4 * i))
    for i in range(1, 120):
        db.execute("INSERT INTO orders VALUES (?, ?, ?, ?)",
                   (i, rng.randint(1, len(NAMES)), rng.randint(5, 500), rng.randint(2010, 2023)))
    return db


def _rows(db: sqlite3.Connection, query: str) -> list | None:
    try:
        return sorted(map(tuple, db.execute(query).fetchall()), key=repr)
    except sqlite3.Error:
        return None


def _check_sql(task: Task, output: str) -> bool:
    query = output.strip().split(";")[0].strip()
    if not query.upper().startswith("SELECT"):
        return False  # only reads: an answer is never run as anything else
    db = _database()
    got = _rows(db, query)
    return got is not None and got == _rows(db, task.key)


# -- shell: the command line, parsed, is the reference's --------------------------------------------
SHELL_FRAMES = {
    "list": ["List every file in {d}, hidden ones too.", "Show all files in {d} including dotfiles.",
             "Display the contents of {d} with hidden entries.", "What command lists {d} with hidden files?"],
    "count": ["Count the lines in {f}.", "How many lines does {f} have?", "Give the line count of {f}.",
              "Print the number of lines of {f}."],
    "find": ["Find files named {p} under {d}.", "Search {d} for files called {p}.",
             "Locate every {p} file below {d}.", "Which command finds {p} files inside {d}?"],
    "grep": ["Search for {w} in {f}.", "Show the lines of {f} that contain {w}.", "Find {w} inside {f}.",
             "Print lines matching {w} from {f}."],
    "mkdir": ["Create the directory {d}, parents too.", "Make the folder {d} and any missing parents.",
              "Make a directory at {d}, creating parents as needed.", "Set up the directory path {d}."],
}
SHELL_ANSWERS = {"list": "ls -a {d}", "count": "wc -l {f}", "find": "find {d} -name '{p}'", "grep": "grep {w} {f}",
                 "mkdir": "mkdir -p {d}"}
DIRS = ["/tmp", "/var/log", "/etc", "/srv/data", "/home/ann", "/opt/app", "/usr/share", "/mnt/backup"]
FILES = ["notes.txt", "app.log", "data.csv", "README.md", "main.py", "report.txt", "config.ini", "todo.md"]
PATTERNS = ["*.py", "*.log", "*.txt", "*.csv", "*.json", "*.md", "*.sh", "*.yaml"]
WORDS = ["error", "warning", "timeout", "user", "token", "failed", "retry", "admin"]


def _shell(rng: random.Random, split: str) -> Task:
    kind = rng.choice(sorted(SHELL_FRAMES))

    def pick(items: list[str]) -> str:
        return rng.choice(items[:4] if split == "train" else items[4:])
    values = {"d": pick(DIRS), "f": pick(FILES), "p": pick(PATTERNS), "w": pick(WORDS)}
    command = SHELL_ANSWERS[kind].format(**values)
    return Task("shell", _frame(rng, SHELL_FRAMES[kind], split).format(**values), command, command)


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
PYTHON_FRAMES = ["Write a Python function {name}(xs) that {what}.", "Define {name}(xs) in Python: it {what}.",
                 "Implement a function {name} taking a list xs that {what}.",
                 "In Python, give me {name}(xs), which {what}."]
PYTHON_NAMES = ["total", "biggest", "backwards", "evens", "unique", "doubled", "smallest", "ordered",
                "f", "solve", "compute", "helper", "process", "run", "go", "do_it"]


def _python(rng: random.Random, split: str) -> Task:
    what, body, tests = rng.choice(PYTHON_TASKS)
    name = rng.choice(PYTHON_NAMES[:8] if split == "train" else PYTHON_NAMES[8:])
    code = f"def {name}(xs):\n    {body}\n"
    asserts = "\n".join(f"assert {name}({args}) == {result}" for args, result in tests)
    return Task("python", _frame(rng, PYTHON_FRAMES, split).format(name=name, what=what), code, asserts)


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
GENERAL_KINDS = {  # (frames, answer from the word)
    "reverse": (["Spell {w} backwards.", "Write {w} in reverse.", "Reverse the letters of {w}.",
                 "What is {w} spelt from the end?"], lambda w: w[::-1]),
    "upper": (["Write {w} in capital letters.", "Give {w} in upper case.", "Uppercase the word {w}.",
               "What is {w} in all caps?"], str.upper),
    "first": (["What is the first letter of {w}?", "Which letter does {w} start with?",
               "Give the initial letter of {w}.", "Name the letter {w} begins with."], lambda w: w[0]),
    "length": (["How many letters are in {w}?", "Count the letters of {w}.", "What is the length of the word {w}?",
                "Give the number of letters in {w}."], lambda w: str(len(w))),
}
GENERAL_WORDS = ["garden", "planet", "silver", "window", "candle", "forest", "bridge", "pencil", "rocket", "meadow",
                 "harbor", "lantern", "puzzle", "violet", "thunder", "compass"]


def _general(rng: random.Random, split: str) -> Task:
    kind = rng.choice(sorted(GENERAL_KINDS))
    frames, answer = GENERAL_KINDS[kind]
    word = rng.choice(GENERAL_WORDS[:8] if split == "train" else GENERAL_WORDS[8:])
    value = answer(word)
    return Task("general", _frame(rng, frames, split).format(w=word), value, value)


def _check_general(task: Task, output: str) -> bool:
    words = re.findall(r"[A-Za-z0-9]+", output)
    return bool(words) and words[0] == task.key


_MAKERS: dict[str, Callable[[random.Random, str], Task]] = {
    "math": _math, "sql": _sql, "shell": _shell, "python": _python, "general": _general}
_CHECKS: dict[str, Callable[[Task, str], bool]] = {
    "math": _check_math, "sql": _check_sql, "shell": _check_shell, "python": _check_python,
    "general": _check_general}
