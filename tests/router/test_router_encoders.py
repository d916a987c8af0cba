"""Encoders: the default is stable across processes and measures similarity; optional ones
fail with an actionable message when their dependency is missing."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from coeflow.errors import ConfigError
from coeflow.router.encoders import HashingEncoder, SentenceTransformerEncoder, make_encoder


def _cos(a, b) -> float:
    da, db = dict(zip(*map(np.ndarray.tolist, a))), dict(zip(*map(np.ndarray.tolist, b)))
    return sum(v * db.get(k, 0.0) for k, v in da.items())


def test_hashing_is_the_same_in_another_process_with_another_hash_seed():
    code = ("from coeflow.router.encoders import HashingEncoder;"
            "i, v = HashingEncoder().encode_one('SELECT name FROM users; sorting lists');"
            "print(i.tolist(), [round(x, 6) for x in v.tolist()])")
    outs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        outs.append(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                   check=True).stdout)
    assert outs[0] == outs[1]
    i, v = HashingEncoder().encode_one("SELECT name FROM users; sorting lists")
    assert outs[0].strip() == f"{i.tolist()} {[round(x, 6) for x in v.tolist()]}"


def test_vectors_are_unit_length_and_related_prompts_are_closer():
    enc = HashingEncoder()
    a = enc.encode_one("how do I sort a list in python")
    b = enc.encode_one("sorting python lists")
    c = enc.encode_one("recipe for banana bread")
    assert float(a[1] @ a[1]) == pytest.approx(1.0, abs=1e-5)
    assert _cos(a, b) > _cos(a, c) + 0.1


def test_function_words_alone_carry_no_features():
    idx, _ = HashingEncoder().encode_one("what is the way to do it?")
    only_mark, _ = HashingEncoder().encode_one("?")
    assert len(idx) == len(only_mark)


def test_missing_sentence_transformers_gives_an_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import fails
    with pytest.raises(ConfigError, match="pip install sentence-transformers"):
        SentenceTransformerEncoder(tmp_path)


def test_model_encoders_need_a_local_directory(tmp_path):
    with pytest.raises(ConfigError, match="--encoder-path"):
        make_encoder("llama")
    with pytest.raises(ConfigError, match="config.json"):
        make_encoder("llama", tmp_path)
    with pytest.raises(ConfigError, match="unknown encoder"):
        make_encoder("word2vec")


def test_code_shape_features_mark_what_a_prompt_looks_like():
    terms = HashingEncoder().terms
    assert {"s:dunder"} <= set(terms("what's the point of __slots__?"))
    assert {"s:flag", "s:redirect"} <= set(terms("ls -la | grep x > out 2>&1"))
    assert {"s:dotted", "s:call"} <= set(terms("os.path.join(a, b)"))
    assert {"s:equation", "s:number"} <= set(terms("solve 3x + 4 = 19"))
    assert not any(t.startswith("s:") for t in terms("why do cats purr"))


def test_contractions_fold_to_their_stem():
    enc = HashingEncoder()
    assert enc.terms("what's wrong") == enc.terms("what wrong")
    assert "w:s" not in enc.terms("it's late")


def test_a_router_saved_before_shape_features_encodes_as_it_did(tmp_path):
    from coeflow.router.encoders import encoder_from_spec

    old_spec = {"kind": "hashing", "n_bits": 18, "char_ngrams": [3, 5], "char_weight": 0.5, "stop_words": True}
    enc = encoder_from_spec(old_spec, tmp_path)
    assert enc.shapes is False and not any(t.startswith("s:") for t in enc.terms("__slots__ ls -la"))
    assert "w:s" in enc.terms("it's late")
    assert encoder_from_spec(HashingEncoder().spec(tmp_path), tmp_path).shapes is True
