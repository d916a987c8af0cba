"""A tiny CoE with hand-written example prompts, shared by the router tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

EXAMPLES = {
    "code": [
        "write a python function to reverse a list", "fix this TypeError in my python script",
        "how do I define a class with a constructor in python", "python list comprehension example",
        "what does the yield keyword do in python", "import a module from another package in python",
        "my python loop over a dict raises an error", "how to read a json file in python",
        "write unit tests for a python function", "python decorator that times a function",
        "convert a python string to an integer", "sort a python list of tuples by the second item",
    ],
    "cooking": [
        "how long should I roast a chicken", "a recipe for banana bread", "how do I make fluffy pancakes",
        "what spices go well with lentil soup", "how to cook rice without it sticking", "easy vegetarian dinner recipe",
        "how do I caramelize onions", "what can I bake with leftover egg whites", "how to make a tomato pasta sauce",
        "tips for grilling steak medium rare", "how long to boil potatoes for mash", "how to knead bread dough by hand",
    ],
    "chat": [
        "tell me a joke", "how are you today", "what should I do this weekend", "recommend a good novel",
        "write a short poem about the sea", "who was the first person on the moon", "what is the capital of Peru",
        "give me some motivation for monday", "describe a sunset", "what is the meaning of friendship",
        "suggest a name for my dog", "what is your favourite colour",
    ],
}


def write_coe(root: Path, examples: dict[str, list[str]] = EXAMPLES, fallback: str = "chat") -> Path:
    doc = {
        "name": "tiny",
        "fallback": fallback,
        "router": "router/",
        "experts": [{"name": n, "path": f"experts/{n}", "description": n, "examples": ex} for n, ex in examples.items()],
    }
    path = root / "coe.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


@pytest.fixture
def tiny_coe(tmp_path: Path) -> Path:
    return write_coe(tmp_path)
