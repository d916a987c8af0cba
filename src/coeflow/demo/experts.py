"""The five demo experts: names, descriptions and the example prompts written into
coe.yaml (which also train the router, with the generated prompts)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DemoExpert:
    name: str
    description: str
    examples: tuple[str, ...]


FALLBACK = "general"

EXPERTS = (
    DemoExpert("python", "Python code: the standard library's style, functions, classes, errors", (
        "write a python function that merges two sorted lists",
        "what does the with statement do in python",
        "fix this: TypeError: can only concatenate str (not \"int\") to str",
        "how do I read a file line by line in python",
        "explain the difference between a list and a generator",
        "write a class that stores a queue of jobs",
    )),
    DemoExpert("math", "Arithmetic, algebra, geometry and word problems with worked answers", (
        "What is 348 divided by 12?",
        "Solve 5x - 3 = 17",
        "A bike costs $240 and is 25% off. What is the sale price?",
        "what is the area of a circle of radius 7",
        "Tom has 36 cards and gives a third to his sister. How many does he keep?",
        "differentiate 4x^3 + 2x",
    )),
    DemoExpert("sql", "SQL: schemas and queries (joins, aggregates, window functions, updates)", (
        "write a SQL query that lists customers with more than 3 orders",
        "how do I join employees to departments",
        "what is the difference between WHERE and HAVING",
        "count orders per status in postgres",
        "create a table for books with a foreign key to authors",
        "rank products by price within each category",
    )),
    DemoExpert("shell", "Shell command lines and bash scripts on Linux", (
        "how do I find files bigger than 1GB on linux",
        "bash loop over all .txt files in a folder",
        "show which process is using port 5432",
        "tar and gzip a directory from the terminal",
        "what does chmod +x do",
        "follow the end of a log file",
    )),
    DemoExpert("general", "General English: explanations, writing, everyday questions (the fallback)", (
        "write a short thank-you note to my neighbour",
        "why do we have leap years",
        "give me tips for a job interview",
        "tell me about the history of the printing press",
        "suggest a name for a bookshop",
        "what is the tallest mountain in Africa",
    )),
)
