"""`coeflow route`, `coeflow router train|eval` as a user runs them."""

from __future__ import annotations

import json

import pytest

from coeflow.cli import main

from conftest import EXAMPLES


def _train(coe, *extra):
    assert main(["router", "train", "--coe", str(coe), *extra]) == 0


def test_train_then_route_shows_decision_and_runner_ups(tiny_coe, capsys):
    _train(tiny_coe)
    out = capsys.readouterr().out
    assert "out-of-fold accuracy" in out and "coverage vs accuracy" in out
    assert main(["route", "--coe", str(tiny_coe), "write a python class with a method"]) == 0
    out = capsys.readouterr().out
    assert "expert:     code" in out and "candidates:" in out and "cooking" in out


def test_route_json_with_knn_lists_nearest_examples(tiny_coe, capsys):
    _train(tiny_coe, "--classifier", "knn")
    capsys.readouterr()
    assert main(["route", "--coe", str(tiny_coe), "--json", "how do I make fluffy pancakes"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["expert"] == "cooking"
    assert obj["nearest_examples"][0]["prompt"] == "how do I make fluffy pancakes"
    assert [c[0] for c in obj["candidates"]][0] == "cooking"


def test_eval_json_is_one_object_with_the_promised_fields(tiny_coe, tmp_path, capsys):
    data = tmp_path / "eval.jsonl"
    rows = [{"prompt": "python function to flatten a list", "expert": "code"},
            {"prompt": "recipe for apple pie", "expert": "cooking"},
            {"prompt": "tell me a story about a cat", "expert": "chat"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _train(tiny_coe, "--data", str(data))
    capsys.readouterr()
    assert main(["router", "eval", "--coe", str(tiny_coe), "--data", str(data), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["n"] == 3
    for key in ("accuracy", "macro_f1", "p50_ms", "p99_ms", "confusion", "curve"):
        assert key in rep
    assert sum(sum(row.values()) for row in rep["confusion"].values()) == 3
    assert set(rep["confusion"]) == set(EXAMPLES)
    assert 0 <= rep["p50_ms"] <= rep["p99_ms"]


def test_user_errors_exit_2_with_a_message_not_a_traceback(tiny_coe, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hello", "expert": "astrology"}\n')
    assert main(["router", "train", "--coe", str(tiny_coe), "--data", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:1" in err and "astrology" in err and "Traceback" not in err
    assert main(["route", "--coe", str(tiny_coe), "hi"]) == 2  # not trained yet
    assert "router train" in capsys.readouterr().err


def test_route_reads_raw_bytes_from_stdin(tiny_coe, capsys, monkeypatch):
    import io
    import sys

    _train(tiny_coe)
    capsys.readouterr()
    fake = io.TextIOWrapper(io.BytesIO(b"python \xff list comprehension"), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", fake)
    assert main(["route", "--coe", str(tiny_coe), "-"]) == 0
    assert "expert:" in capsys.readouterr().out


@pytest.mark.parametrize("flag", [["--threshold", "1.5"], ["--target-accuracy", "-0.1"]])
def test_out_of_range_threshold_options_are_refused(tiny_coe, capsys, flag):
    assert main(["router", "train", "--coe", str(tiny_coe), *flag]) == 2
    assert "between 0 and 1" in capsys.readouterr().err
