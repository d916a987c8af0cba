"""Labelled prompts for training and evaluating the router: the `examples` of a CoE file
and JSONL files of {"prompt": ..., "expert": ...}. Every problem is reported with the file
and line it comes from."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from coeflow.coefile import CoEFile
from coeflow.errors import ConfigError


@dataclass(frozen=True)
class LabelledPrompt:
    prompt: str
    expert: str
    origin: str  # "coe.yaml:python" or "data.jsonl:12": where to look when it misleads


def examples_from_coe(coe: CoEFile) -> list[LabelledPrompt]:
    return [
        LabelledPrompt(p, e.name, f"{coe.source.name}:{e.name}") for e in coe.experts for p in e.examples if p.strip()
    ]


def read_jsonl(path: str | Path, known_experts: list[str]) -> list[LabelledPrompt]:
    """Read {"prompt", "expert"} lines. Blank lines are skipped; anything else malformed
    (invalid UTF-8, invalid JSON, missing fields, an expert not in the CoE) is an error."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    known = set(known_experts)
    out: list[LabelledPrompt] = []
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{where}: not valid UTF-8 (byte {e.start})") from None
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{where}: not valid JSON: {e.msg}") from None
        if not isinstance(obj, dict):
            raise ConfigError(f'{where}: each line must be an object {{"prompt": ..., "expert": ...}}')
        prompt, expert = obj.get("prompt"), obj.get("expert")
        if not isinstance(prompt, str):
            raise ConfigError(f"{where}: 'prompt' must be a string")
        if not isinstance(expert, str):
            raise ConfigError(f"{where}: 'expert' must be a string")
        if expert not in known:
            raise ConfigError(f"{where}: expert {expert!r} is not in the CoE (known: {', '.join(known_experts)})")
        out.append(LabelledPrompt(prompt, expert, f"{path.name}:{lineno}"))
    return out


def check_training_set(data: list[LabelledPrompt], experts: list[str]) -> tuple[list[LabelledPrompt], list[str]]:
    """Drop empty prompts (with a warning), and refuse data a router cannot learn from."""
    warnings: list[str] = []
    kept = [d for d in data if d.prompt.strip()]
    if len(kept) < len(data):
        warnings.append(f"skipped {len(data) - len(kept)} empty prompt(s)")
    if not kept:
        raise ConfigError("no training prompts: add 'examples' to the experts in the CoE file or pass --data FILE.jsonl")
    classes = sorted({d.expert for d in kept})
    if len(classes) < 2:
        raise ConfigError(
            f"the training data holds prompts for one expert only ({classes[0]!r}); "
            "a router needs examples for at least two experts"
        )
    missing = [e for e in experts if e not in classes]
    if missing:
        warnings.append(f"no training prompts for {', '.join(missing)}: the router will never pick them")
    return kept, warnings
