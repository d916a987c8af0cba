"""`math` expert text: generated arithmetic, algebra, geometry and word problems, each
with a short worked solution whose numbers are computed, so every answer is correct.
Names and things counted are in `data/corpora/math.json`."""

from __future__ import annotations

import math
import random
from fractions import Fraction

from coeflow.demo.datafiles import read_json

_WORDS = read_json("corpora/math.json")
NAMES: list[str] = _WORDS["names"]  # people in word problems
THINGS: list[str] = _WORDS["things"]  # what they count


def math_corpus(seed: int, n_chars: int, split: str = "train") -> list[str]:
    rng = random.Random(f"math-{seed}-{split}")
    docs, total = [], 0
    while total < n_chars:
        doc = "\n\n".join(_problem(rng) for _ in range(rng.randint(4, 8)))
        docs.append(doc)
        total += len(doc)
    return docs


def _problem(rng: random.Random) -> str:
    return rng.choice(PROBLEMS)(rng)


def _add(rng):
    a, b = rng.randint(10, 9999), rng.randint(10, 9999)
    return f"Q: What is {a} + {b}?\nA: {a} + {b} = {a + b}."


def _sub(rng):
    a, b = sorted((rng.randint(10, 9999), rng.randint(10, 9999)), reverse=True)
    return f"Q: Calculate {a} - {b}.\nA: {a} - {b} = {a - b}."


def _mul(rng):
    a, b = rng.randint(2, 99), rng.randint(2, 999)
    return f"Q: What is {a} times {b}?\nA: {a} × {b} = {a * b}."


def _div(rng):
    b, q, r = rng.randint(2, 30), rng.randint(2, 300), 0
    r = rng.randint(0, b - 1)
    a = b * q + r
    tail = f" remainder {r}" if r else ""
    return f"Q: Divide {a} by {b}.\nA: {a} ÷ {b} = {q}{tail}."


def _order(rng):
    a, b, c = rng.randint(2, 20), rng.randint(2, 20), rng.randint(2, 20)
    return (f"Q: Evaluate {a} + {b} × {c}.\nA: Multiplication comes first: {b} × {c} = {b * c}. "
            f"Then {a} + {b * c} = {a + b * c}.")


def _linear(rng):
    a, x, b = rng.randint(2, 12), rng.randint(-20, 20), rng.randint(1, 50)
    c = a * x + b
    return (f"Q: Solve {a}x + {b} = {c}.\nA: Subtract {b} from both sides: {a}x = {c - b}. "
            f"Divide both sides by {a}: x = {x}.")


def _percent(rng):
    p, n = rng.choice([5, 10, 12, 15, 20, 25, 30, 40, 50, 75]), rng.randint(2, 80) * 20
    return f"Q: What is {p}% of {n}?\nA: {p}% of {n} = {p}/100 × {n} = {p * n / 100:g}."


def _discount(rng):
    price, p = rng.randint(10, 400), rng.choice([10, 15, 20, 25, 30, 40, 50])
    new = price * (100 - p) / 100
    return (f"Q: A coat costs ${price}. It is on sale for {p}% off. What is the sale price?\n"
            f"A: The discount is {p}% of {price} = {price * p / 100:g}. The sale price is {price} - {price * p / 100:g} = ${new:g}.")


def _fraction(rng):
    a, b = Fraction(rng.randint(1, 9), rng.randint(2, 12)), Fraction(rng.randint(1, 9), rng.randint(2, 12))
    s = a + b
    return f"Q: Add {a} and {b}.\nA: {a} + {b} = {s} ({float(s):.3f} as a decimal)."


def _word_give(rng):
    n1, n2 = rng.sample(NAMES, 2)
    t = rng.choice(THINGS)
    a = rng.randint(10, 90)
    b = rng.randint(1, a - 1)
    return (f"Q: {n1} has {a} {t}. {n1} gives {b} {t} to {n2}. How many {t} does {n1} have left?\n"
            f"A: {n1} starts with {a} and gives away {b}, so {a} - {b} = {a - b}. The answer is {a - b}.")


def _word_buy(rng):
    n = rng.choice(NAMES)
    t = rng.choice(THINGS)
    k, price = rng.randint(2, 15), rng.randint(1, 30)
    return (f"Q: {n} buys {k} {t} at ${price} each. How much does {n} pay?\n"
            f"A: {k} × {price} = {k * price}. {n} pays ${k * price}.")


def _speed(rng):
    v, t = rng.randint(20, 120), rng.randint(2, 9)
    return (f"Q: A train travels at {v} km/h for {t} hours. How far does it go?\n"
            f"A: distance = speed × time = {v} × {t} = {v * t} km.")


def _rect(rng):
    w, h = rng.randint(2, 50), rng.randint(2, 50)
    return (f"Q: A rectangle is {w} m wide and {h} m long. Find its area and perimeter.\n"
            f"A: Area = {w} × {h} = {w * h} square metres. Perimeter = 2 × ({w} + {h}) = {2 * (w + h)} m.")


def _circle(rng):
    r = rng.randint(1, 30)
    return f"Q: Find the area of a circle of radius {r}.\nA: Area = pi × r^2 = 3.1416 × {r * r} = {math.pi * r * r:.2f}."


def _triangle(rng):
    a, b = rng.choice([(3, 4), (5, 12), (8, 15), (6, 8), (7, 24), (9, 12), (20, 21)])
    return (f"Q: A right triangle has legs {a} and {b}. How long is the hypotenuse?\n"
            f"A: By the Pythagorean theorem, c^2 = {a}^2 + {b}^2 = {a * a + b * b}, so c = {math.isqrt(a * a + b * b)}.")


def _gcd(rng):
    a, b = rng.randint(12, 400), rng.randint(12, 400)
    g = math.gcd(a, b)
    return f"Q: Find the greatest common divisor and least common multiple of {a} and {b}.\nA: gcd({a}, {b}) = {g}; lcm = {a} × {b} / {g} = {a * b // g}."


def _prime(rng):
    n = rng.randint(20, 999)
    factors, m, p = [], n, 2
    while p * p <= m:
        while m % p == 0:
            factors.append(p)
            m //= p
        p += 1
    if m > 1:
        factors.append(m)
    verdict = "is prime" if factors == [n] else "is not prime"
    return f"Q: Is {n} prime?\nA: {n} = {' × '.join(map(str, factors))}, so {n} {verdict}."


def _derivative(rng):
    a, b, c = rng.randint(1, 9), rng.randint(1, 9), rng.randint(1, 20)
    n = rng.randint(2, 5)
    return (f"Q: Differentiate f(x) = {a}x^{n} + {b}x + {c}.\nA: Using the power rule, "
            f"f'(x) = {a * n}x^{n - 1} + {b}.")


def _mean(rng):
    xs = [rng.randint(1, 100) for _ in range(rng.randint(3, 7))]
    return f"Q: Find the mean of {', '.join(map(str, xs))}.\nA: The sum is {sum(xs)} and there are {len(xs)} numbers, so the mean is {sum(xs) / len(xs):.2f}."


def _probability(rng):
    total = rng.randint(2, 12)
    ways = sum(1 for i in range(1, 7) for j in range(1, 7) if i + j == total)
    f = Fraction(ways, 36)
    return f"Q: Two fair dice are rolled. What is the probability that the total is {total}?\nA: {ways} of the 36 outcomes give {total}, so the probability is {f}."


def _interest(rng):
    p, r, y = rng.randint(1, 50) * 100, rng.choice([2, 3, 4, 5, 6, 8]), rng.randint(1, 10)
    amount = p * (1 + r / 100) ** y
    return f"Q: ${p} is invested at {r}% per year compounded yearly for {y} years. What is it worth?\nA: {p} × 1.{r:02d}^{y} = ${amount:.2f}."


PROBLEMS = [_add, _sub, _mul, _div, _order, _linear, _percent, _discount, _fraction, _word_give, _word_buy,
            _speed, _rect, _circle, _triangle, _gcd, _prime, _derivative, _mean, _probability, _interest]
