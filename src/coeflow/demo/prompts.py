"""Generated router training prompts for the demo CoE.

Each domain supplies its vocabulary (`vocab.py`, from `data/prompts/<domain>/`): concepts
(noun phrases), tasks (verb phrases), error messages and whole questions; all domains share
the same question frames (`data/prompts/templates.json`: "What is {c}?", "how do I {t}"),
so a frame says nothing about the expert and the router must learn the content words.
Python's vocabulary is also mined from the running interpreter (module, builtin and
exception names). Math questions with numbers are built here, where their numbers are
drawn. The held-out test prompts (data/heldout_prompts*.jsonl) are hand-written separately
and are not produced here."""

from __future__ import annotations

import random

from coeflow.demo import vocab
from coeflow.demo.datafiles import read_json

# Generated prompts per expert = per_expert (the build's setting) x VOCAB_FACTOR.
VOCAB_FACTOR = 3

TEMPLATES: dict[str, list[str]] = read_json("prompts/templates.json")
CONCEPT_FRAMES = TEMPLATES["concept"]
TASK_FRAMES = TEMPLATES["task"]
ERROR_FRAMES = TEMPLATES["error"]
PASTE_FRAMES = TEMPLATES["paste"]


def _mentions(domain: str) -> list[str]:
    """What a task of the domain may end with (" in python"): the list stores them without the space."""
    return [" " + m for m in vocab.words(domain, "mentions")]


class _Deck:
    """Draws items in a shuffled order and reshuffles when all were drawn, so that a few
    hundred draws cover a long vocabulary list instead of repeating its favourites."""

    def __init__(self, rng: random.Random, items: list[str]):
        self.rng, self.items, self.left = rng, list(dict.fromkeys(items)), []

    def draw(self) -> str:
        if not self.left:
            self.left = self.items[:]
            self.rng.shuffle(self.left)
        return self.left.pop()


def _concept(rng: random.Random, deck: _Deck) -> str:
    frame = rng.choice(CONCEPT_FRAMES)
    return frame.format(c=deck.draw(), c2=deck.draw() if "{c2}" in frame else "")


def _task(rng: random.Random, deck: _Deck, mention: list[str] | None, **slots) -> str:
    slots = {"n": [str(rng.randint(2, 500))], "port": [str(rng.choice([22, 80, 443, 3000, 5432, 8000, 8080, 9000]))],
             "perm": [rng.choice(["600", "644", "700", "755", "777", "+x", "u+rw"])], **slots}
    t = deck.draw().format(**{k: rng.choice(v) for k, v in slots.items()})
    if mention and rng.random() < 0.3:
        t += rng.choice(mention)
    return rng.choice(TASK_FRAMES).format(t=t)


def _style(rng: random.Random, text: str) -> str:
    """Users type in many styles: lower case, no final punctuation."""
    if rng.random() < 0.25:
        text = text.lower()
    if rng.random() < 0.3:
        text = text.rstrip("?.")
    return text


def _python_makers(rng: random.Random) -> list[tuple[float, object]]:
    names = vocab.python_names()
    libraries = vocab.words("python", "libraries")
    ideas = _Deck(rng, vocab.words("python", "concepts") + libraries)
    # The interpreter's own names: modules, builtins, exceptions, keywords, dunders, methods,
    # and (a deck of their own, being many) the public functions of common modules.
    core = _Deck(rng, [f"{f}()" for f in names["builtins"]] + names["exceptions"] + names["dunders"]
                 + [f"the {k} keyword" for k in names["keywords"]])
    modules = _Deck(rng, [f"the {m} module" for m in names["modules"]] + names["methods"])
    qualified = _Deck(rng, names["qualified"])
    programs = [t.format(p=p) for p in vocab.words("python", "programs")
                for t in rng.sample(TEMPLATES["python_program"], 2)]
    tasks = _Deck(rng, vocab.words("python", "tasks") + programs)
    doc_tasks = _Deck(rng, names["doc_tasks"])
    errors = _Deck(rng, vocab.words("python", "errors"))
    lib = _Deck(rng, libraries)
    mention = _mentions("python")
    return [
        (2, lambda: _concept(rng, ideas)),
        (2, lambda: _concept(rng, core)),
        (1, lambda: _concept(rng, modules)),
        (1, lambda: _concept(rng, qualified)),
        (4, lambda: _task(rng, tasks, mention)),
        (2, lambda: rng.choice(TASK_FRAMES).format(t=doc_tasks.draw() + (rng.choice(mention) if rng.random() < 0.6 else ""))),
        (1, lambda: rng.choice(ERROR_FRAMES).format(e=errors.draw())),
        (1, lambda: rng.choice(TEMPLATES["python_library"]).format(
            l=lib.draw(), t=tasks.draw().format(n=rng.randint(2, 99)))),
    ]


def _math_makers(rng: random.Random) -> list[tuple[float, object]]:
    concepts = _Deck(rng, vocab.words("math", "concepts"))
    tasks = _Deck(rng, vocab.words("math", "tasks"))
    names, items = vocab.words("math", "names"), vocab.words("math", "items")
    units = read_json("prompts/math/units.json")
    shapes, functions = vocab.words("math", "shapes"), vocab.words("math", "functions")
    return [
        (6, lambda: _math_problem(rng, names, items)),
        (2, lambda: _concept(rng, concepts)),
        (1, lambda: _task(rng, tasks, None)),
        (2, lambda: _math_more(rng, units, shapes, functions)),
    ]


def _math_problem(rng: random.Random, names: list[str], items: list[str]) -> str:
    """A math question over drawn numbers; its templates are code because they compute with them."""
    a, b, c = rng.randint(2, 99), rng.randint(2, 60), rng.randint(2, 500)
    name, other = rng.sample(names, 2)
    item = rng.choice(items)
    return rng.choice([
        f"What is {a} plus {b}?", f"what's {a} * {b}", f"Calculate {c} divided by {b}", f"compute {a} - {b} + {c}",
        f"How much is {a} times {b} minus {c}?", f"{a} x {b} = ?", f"what is {c} squared", f"{c} / {b}",
        f"Solve for x: {a}x - {b} = {c}", f"solve {b}x + {a} = {c}", f"Find x if x/{b} = {a}",
        f"What is {b}% of {c}?", f"what percent of {c} is {a}", f"Increase {c} by {b} percent",
        f"{name} has {c} {item} and gives {a} to {other}. How many are left?",
        f"{name} buys {a} {item} for ${b} each. What is the total cost?",
        f"If {name} reads {b} pages a day, how many days to finish a {c} page book?",
        f"{name} and {other} share {c} {item} in the ratio {a % 9 + 1}:{b % 9 + 1}. How many does each get?",
        f"A cyclist rides {c} km at {b} km/h. How long does the ride take?",
        f"A bus covers {c} miles in {b % 9 + 2} hours. How fast is it going?",
        f"A jacket is marked down {b % 50 + 5}% to ${c}. What did it cost before?",
        f"What is the area of a triangle with base {a} and height {b}?", f"Find the perimeter of a {a} by {b} rectangle",
        f"What is the volume of a cube with side {b}?", f"circumference of a circle with diameter {a}",
        f"What is the greatest common divisor of {a} and {c}?", f"lcm of {a} and {b}", f"Is {c} prime?",
        f"prime factorization of {c}", f"What is the mean of {a}, {b} and {c}?", f"median of {a}, {b}, {c}, {a + b}",
        f"Differentiate {a}x^2 + {b}x", f"integral of x^{b % 5 + 1} dx", f"derivative of sin({a}x)",
        f"limit of (x^2 - {a * a})/(x - {a}) as x approaches {a}", f"simplify {a}/{a * (b % 7 + 2)}",
        f"1/{a} + 1/{b} = ?", f"what is {a}/{b} as a decimal", f"convert {c} minutes to hours",
        f"How many seconds are in {a} hours?", f"probability of rolling a total of {b % 11 + 2} with two dice",
        f"probability of {b % 5 + 1} heads in 5 coin tosses", f"how many ways to choose 2 from {a % 9 + 3}",
        f"What is {b % 12 + 1} factorial?", f"solve x^2 - {a}x + {b} = 0", f"slope between ({a},{b}) and ({c},{a})",
        f"${c} at {b % 9 + 1}% interest for {a % 9 + 1} years", f"square root of {c}", f"round {c}.{a} to the nearest ten",
        f"expand (x + {a})(x - {b})", f"log base 2 of {2 ** (a % 12)}", f"{name} is {a}; {other} is {b} years older. Age of {other}?",
        f"{b} grams of sugar per cake, how much for {a % 12 + 2} cakes?", f"${b} per hour for {a % 30 + 10} hours is how much?",
        f"sin {rng.choice([30, 45, 60, 90])} degrees", f"sum of the integers from 1 to {c}", f"{a}^{b % 4 + 2}",
        f"A tank holds {c} litres and drains {b} litres per minute. When is it empty?",
        f"What is {a}% of {b}% of {c}?", f"{name} scored {a}, {b} and {c % 100}. What is the average score?",
    ])


def _math_more(rng: random.Random, units: list[list[str]], shapes: list[str], functions: list[str]) -> str:
    """Units, shapes and functions from the vocabulary, with numbers."""
    a, b = rng.randint(2, 40), rng.choice([0.5, 1.5, 2.5, 3, 7, 12, 45, 100, 250])
    u1, u2 = rng.choice(units)
    shape, f = rng.choice(shapes), rng.choice(functions)
    return rng.choice([
        f"convert {b} {u1} to {u2}", f"how many {u2} are in {a} {u1}?", f"{b} {u1} in {u2}",
        f"area of a {shape} with side {a}", f"how do I find the area of a {shape}", f"volume of a {shape} of height {a}",
        f"perimeter of a {shape}", f"what is the formula for the surface area of a {shape}",
        f"how many sides does a {shape} have", f"sum of the interior angles of a {shape}",
        f"differentiate {f}", f"derivative of {f}", f"integrate {f} dx", f"find the integral of {f} from 0 to {a}",
        f"limit of {f} as x goes to infinity", f"graph of y = {f}", f"find the maximum of {f} on [0, {a}]",
        f"solve {a}x + {b} = {a * 3}", f"what is {a}% of {b}", f"average speed for {a} km in {b} hours",
        f"{a} workers build a wall in {a + 4} days. How long would {a + 2} workers take?",
        f"mix {a} litres of {b}% juice with water to make it half as strong: how much water?",
        f"the ratio of boys to girls is {a}:{a + 3} and there are {a * 7} children. How many girls?",
        f"a number doubled and increased by {a} gives {a * 5}. find the number",
        f"in {a} years I will be twice as old as I was {a + 2} years ago. how old am I?",
        f"what is the probability of getting at least one six in {a % 6 + 2} rolls",
    ])


def _sql_makers(rng: random.Random) -> list[tuple[float, object]]:
    concepts = _Deck(rng, vocab.words("sql", "concepts") + vocab.words("sql", "keywords")
                     + vocab.words("sql", "functions") + vocab.words("sql", "terms"))
    tasks = _Deck(rng, vocab.words("sql", "tasks"))
    errors = _Deck(rng, vocab.words("sql", "errors"))
    tables, columns = vocab.words("sql", "tables"), vocab.words("sql", "columns")
    slots = {"t": tables, "u": tables, "c": columns, "d": columns}
    mention = _mentions("sql")
    return [
        (4, lambda: _concept(rng, concepts)),
        (6, lambda: _task(rng, tasks, mention, **slots)),
        (1, lambda: rng.choice(ERROR_FRAMES).format(e=errors.draw())),
    ]


def _shell_makers(rng: random.Random) -> list[tuple[float, object]]:
    tool_pairs = read_json("prompts/shell/tools.json")  # [command, what people use it for]
    commands = [c for c, _ in tool_pairs]
    named = [f"the {c} command" for c in vocab.words("shell", "commands")]
    concepts = _Deck(rng, vocab.words("shell", "concepts") + named + vocab.words("shell", "ideas") + commands)
    tasks = _Deck(rng, vocab.words("shell", "tasks") + [d for _, d in tool_pairs])
    tools = _Deck(rng, [f"{c}\t{d}" for c, d in tool_pairs])
    errors = _Deck(rng, vocab.words("shell", "errors"))
    mention = _mentions("shell")

    def tool_question() -> str:
        c, d = tools.draw().split("\t")
        return rng.choice(TEMPLATES["shell_tool"]).format(c=c, d=d, c2=rng.choice(commands))

    return [
        (3, lambda: _concept(rng, concepts)),
        (5, lambda: _task(rng, tasks, mention)),
        (2, tool_question),
        (1, lambda: rng.choice(ERROR_FRAMES).format(e=errors.draw())),
    ]


def _general_makers(rng: random.Random) -> list[tuple[float, object]]:
    topic_list, advice = vocab.words("general", "topics"), vocab.words("general", "advice")
    topics = _Deck(rng, topic_list)
    tasks = _Deck(rng, vocab.words("general", "tasks") + advice)
    questions = vocab.words("general", "questions")
    slots = {"p": vocab.words("general", "people"), "c": topic_list, "w": vocab.words("general", "writing"),
             "a": vocab.words("general", "writing_about"), "v": advice, "place": vocab.words("general", "places")}

    def framed() -> str:
        return rng.choice(TEMPLATES["general_question"]).format(n=rng.randint(2, 10),
                                                                **{k: rng.choice(v) for k, v in slots.items()})

    return [
        (3, lambda: _concept(rng, topics)),
        (2, lambda: _task(rng, tasks, None)),
        (1, lambda: rng.choice(questions)),
        (2, lambda: rng.choice(TEMPLATES["general_creative"]).format(c=topics.draw())),
        (4, framed),
    ]


MAKERS = {"python": _python_makers, "math": _math_makers, "sql": _sql_makers, "shell": _shell_makers,
          "general": _general_makers}


def generate_router_prompts(seed: int, per_expert: int = 400, pasted: dict[str, list[str]] | None = None,
                            vocab_factor: int = VOCAB_FACTOR) -> list[dict]:
    """{"prompt", "expert"} dicts, `per_expert * vocab_factor` per expert (the vocabulary is
    wide: a few hundred prompts would leave most of it unseen), deterministic per seed.
    `pasted` holds short lines per expert (a line of code, a query, a command) that users
    paste into questions; some prompts are built around them."""
    pasted = pasted or {}
    rng = random.Random(f"router-prompts-{seed}")
    out: list[dict] = []
    for expert, makers in MAKERS.items():
        weighted = makers(rng)
        lines = pasted.get(expert)
        if lines:
            weighted = weighted + [(2, lambda lines=lines: rng.choice(PASTE_FRAMES).format(s=rng.choice(lines)))]
        weights = [w for w, _ in weighted]
        want = per_expert * vocab_factor
        seen: set[str] = set()
        tries = 0
        while len(seen) < want and tries < want * 20:
            tries += 1
            make = rng.choices(weighted, weights=weights)[0][1]
            p = _style(rng, make())
            if p not in seen:
                seen.add(p)
                out.append({"prompt": p, "expert": expert})
    return out


def pasted_lines(expert: str, docs: list[str], n: int, seed: int) -> list[str]:
    """Up to n short lines of a domain's corpus that a user might paste into a question:
    a line of code, a query line, a command, a math problem. None for `general`."""
    keep = {
        "python": lambda ln: not ln.startswith(("#", '"', "'")) and any(ch in ln for ch in "(=:["),
        "sql": lambda ln: ln.split(" ", 1)[0] in {"SELECT", "FROM", "WHERE", "JOIN", "LEFT", "GROUP", "ORDER",
                                                   "HAVING", "UPDATE", "INSERT", "DELETE", "WITH", "SET", "CREATE"},
        "shell": lambda ln: not ln.startswith("#") and len(ln.split()) >= 2,
        "math": lambda ln: ln.startswith("Q: "),
    }.get(expert)
    if keep is None:
        return []
    lines = sorted({ln.strip() for d in docs for ln in d.splitlines() if 12 <= len(ln.strip()) <= 80 and keep(ln.strip())})
    rng = random.Random(f"pasted-{expert}-{seed}")
    picked = rng.sample(lines, min(n, len(lines)))
    return [p.removeprefix("Q: ") for p in picked]
