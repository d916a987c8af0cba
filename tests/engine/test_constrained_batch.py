"""Constrained rows decoded together: their masks are made and applied as one array, and each
row still gets exactly what it gets alone; a row whose constraint breaks ends alone."""

from __future__ import annotations

import json

import pytest
import torch

from coeflow.backend.real import ExpertRuntime
from coeflow.engine import Engine, SamplingParams
from coeflow.model import ModelConfig, Tokenizer
from coeflow.server.structured import GrammarConstraint, grammar_for

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 999},
                                           "ok": {"type": "boolean"}}, "required": ["n", "ok"],
          "additionalProperties": False}


@pytest.fixture(scope="module")
def setup(checkpoints):
    path = checkpoints["llama-gqa"]
    tok = Tokenizer.from_dir(path)
    runtime = ExpertRuntime(tok, frozenset(tok.eos_ids), ModelConfig.from_dir(path))
    grammar = grammar_for({"type": "json_schema", "json_schema": {"name": "t", "schema": SCHEMA}})
    return Engine.from_checkpoint(path, fused=False), runtime, grammar


class Broken:
    """A constraint that fails on its third token."""

    def __init__(self) -> None:
        self.seen = 0

    def allowed(self, vocab_size: int) -> torch.Tensor:
        return torch.ones(vocab_size, dtype=torch.bool)

    def accept(self, token: int) -> None:
        self.seen += 1
        if self.seen == 3:
            raise ValueError("broken on purpose")


def _run(engine, runtime, prompts, constraints):
    params = SamplingParams(max_tokens=40)
    seqs = [engine.open(p, params, runtime.eos_ids, runtime.tokenizer.decode, index=i, constraint=c)
            for i, (p, c) in enumerate(zip(prompts, constraints))]
    for s in seqs:
        engine.prefill(s)
    for _ in engine.decode([s for s in seqs if not s.done], 39):
        pass
    out = [(s.completion.token_ids, s.completion.finish_reason) for s in seqs]
    for s in seqs:
        engine.close(s)
    return out


def test_constrained_rows_together_match_each_alone_and_a_broken_one_ends_alone(setup):
    engine, runtime, grammar = setup
    prompts = [[1, 40, 41], [1, 50], [1, 60, 61, 62], [1, 70]]
    alone = [_run(engine, runtime, [p], [GrammarConstraint(runtime, grammar)])[0] for p in prompts[:3]]
    together = _run(engine, runtime, prompts,
                    [GrammarConstraint(runtime, grammar) for _ in range(3)] + [Broken()])
    assert together[:3] == alone
    for ids, reason in together[:3]:
        assert reason == "stop"
        doc = json.loads(runtime.tokenizer.decode(ids))
        assert set(doc) == {"n", "ok"} and 0 <= doc["n"] <= 999
    assert together[3][1] == "error"
