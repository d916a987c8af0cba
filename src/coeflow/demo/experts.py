"""The five demo experts: names, descriptions and the example prompts written into
coe.yaml (which also train the router, with the generated prompts), read from
`data/experts.json`."""

from __future__ import annotations

from dataclasses import dataclass

from coeflow.demo.datafiles import DATA_DIR, read_json


@dataclass(frozen=True)
class DemoExpert:
    name: str
    description: str
    examples: tuple[str, ...]


def _load() -> tuple[str, tuple[DemoExpert, ...]]:
    doc = read_json("experts.json")
    path = DATA_DIR / "experts.json"
    try:
        experts = tuple(DemoExpert(e["name"], e["description"], tuple(e["examples"])) for e in doc["experts"])
        fallback = doc["fallback"]
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: want {{'fallback': name, 'experts': [{{name, description, examples}}]}}: {e!r}") from None
    if fallback not in [e.name for e in experts]:
        raise ValueError(f"{path}: fallback {fallback!r} is not one of the experts")
    return fallback, experts


FALLBACK, EXPERTS = _load()
