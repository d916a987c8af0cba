"""Structured output: `response_format` `json_object` or `json_schema` as a constraint on every
token a sequence chooses (engine.sampling.Constraint), so that the answer always parses and
matches the schema.

Grammars are compiled and matched by llguidance: a Rust library without dependencies, with CPU
wheels, that computes a step's token mask from the tokenizer's own vocabulary (it is what
vLLM, SGLang and llama.cpp use too); xgrammar needs transformers and triton, outlines-core a
regex built from the schema. A request with a schema cannot also ignore EOS: once the JSON is
whole, EOS is the only token the grammar allows."""

from __future__ import annotations

import json
import threading
from typing import Any

import llguidance
import numpy as np
import torch
from torch import Tensor

from coeflow.errors import CoeflowError


# JSON written compactly, ", " and ": " between items and no other whitespace: a model cannot spend
# its tokens (or loop) on whitespace the schema does not care about.
COMPACT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def grammar_for(response_format: dict[str, Any]) -> str | None:
    """The llguidance grammar of an OpenAI `response_format`; None for plain text. ValueError
    saying what is wrong for a format or schema it cannot take."""
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        schema: Any = {"type": "object"}
    elif kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise ValueError('json_schema must be an object with a "schema" object')
        schema = spec.get("schema", {})
    else:
        raise ValueError(f"type must be text, json_object or json_schema, got {kind!r}")
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults=COMPACT)
    except ValueError as e:
        raise ValueError(f"the schema is not valid: {e}") from None
    check_grammar(grammar)
    return grammar


def check_grammar(grammar: str) -> None:
    """ValueError saying why, for a grammar (JSON or Lark, as llguidance takes them) it cannot match."""
    error = llguidance.LLMatcher.validate_grammar(grammar)
    if error and not error.startswith("WARNING"):
        raise ValueError(f"the schema cannot be used: {error}")


_TOKENIZERS: dict[int, tuple[Any, llguidance.LLTokenizer]] = {}  # by id of coeflow's Tokenizer, kept alive
_TOKENIZERS_LOCK = threading.Lock()


def _ll_tokenizer(runtime: Any) -> llguidance.LLTokenizer:
    """The expert's tokenizer as llguidance reads it, made once (it slices the whole vocabulary)."""
    tok = runtime.tokenizer
    with _TOKENIZERS_LOCK:
        got = _TOKENIZERS.get(id(tok))
        if got is None or got[0] is not tok:
            eos = sorted(runtime.eos_ids)
            got = _TOKENIZERS[id(tok)] = (tok, llguidance.LLTokenizer(
                tok.tok.to_str(), n_vocab=runtime.config.vocab_size, eos_token=eos or None))
        return got[1]


class GrammarConstraint:
    """One sequence's progress through a grammar."""

    def __init__(self, runtime: Any, grammar: str) -> None:
        """Slow the first time for an expert (its vocabulary is read): build it off the event loop."""
        self.grammar = grammar  # kept so that a replica elsewhere (coeflow serve --ray) can build it again
        try:
            self.matcher = llguidance.LLMatcher(_ll_tokenizer(runtime), grammar)
        except Exception as e:  # noqa: BLE001  e.g. a tokenizer llguidance cannot read
            raise CoeflowError(f"structured output is unavailable for this expert: {e}") from None
        if self.matcher.is_error():
            raise CoeflowError(f"the grammar cannot be matched: {self.matcher.get_error()}")
        self._words = (runtime.config.vocab_size + 31) // 32  # the mask: 32 tokens an int32, as llguidance writes it

    def allowed(self, vocab_size: int) -> Tensor:
        mask = self.allowed_rows([self], vocab_size)[0]
        if not mask.any():
            raise CoeflowError(f"the grammar allows no next token: {self.matcher.get_error() or 'a dead end'}")
        return mask

    @classmethod
    def allowed_rows(cls, constraints: list["GrammarConstraint"], vocab_size: int) -> Tensor:
        """Every row's `allowed`, written into one array (on this thread: llguidance's own
        threads would compete with the model's for the cores); tokens past the grammar's
        vocabulary are never allowed."""
        words = max(c._words for c in constraints)
        bits = np.zeros((len(constraints), words), dtype=np.int32)
        for i, c in enumerate(constraints):
            c.matcher.unsafe_compute_mask_ptr(bits[i].ctypes.data, words * 4)  # into the array, no copy
        mask = np.zeros((len(constraints), vocab_size), dtype=bool)
        n = min(vocab_size, words * 32)
        mask[:, :n] = np.unpackbits(bits.view(np.uint8), axis=1, count=n, bitorder="little").view(bool)
        return torch.from_numpy(mask)

    def accept(self, token: int) -> None:
        if not self.matcher.consume_token(token) or self.matcher.is_error():
            raise CoeflowError(f"the output left its grammar: {self.matcher.get_error()}")
