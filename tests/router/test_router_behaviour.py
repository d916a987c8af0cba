"""The router as the server and the user rely on it: it learns from example prompts, says
how sure it is, falls back when unsure, survives odd input, and loads what it saved."""

from __future__ import annotations

import json

import numpy as np
import pytest

from coeflow.coefile import load_coe
from coeflow.errors import ConfigError
from coeflow.router import LabelledPrompt, Router, examples_from_coe, load_router_for_coe, read_jsonl, train_router

from conftest import EXAMPLES

CLEAR = {
    "code": "how do I write a python function that removes duplicates from a list",
    "cooking": "what is a good recipe for chocolate cake and how long to bake it",
}


@pytest.fixture(params=["linear", "knn"])
def trained(request, tiny_coe):
    coe = load_coe(tiny_coe)
    router = train_router(examples_from_coe(coe), coe.expert_names, coe.fallback, classifier=request.param)
    router.save(coe.router_dir)
    return coe, router


def test_routes_clear_prompts_to_their_expert_with_a_distribution(trained):
    _, router = trained
    for expert, prompt in CLEAR.items():
        d = router.route(prompt)
        assert d.expert == expert and d.top == expert and not d.fell_back
        probs = [p for _, p in d.candidates]
        assert sorted(probs, reverse=True) == probs
        assert {e for e, _ in d.candidates} == set(EXAMPLES)
        assert sum(probs) == pytest.approx(1.0)
        assert d.confidence == pytest.approx(probs[0])


def test_saved_router_loads_and_decides_identically(trained):
    coe, router = trained
    loaded = load_router_for_coe(coe)
    for prompt in [*CLEAR.values(), "tell me something nice", "bake python"]:
        a, b = router.route(prompt), loaded.route(prompt)
        assert (a.expert, a.fell_back) == (b.expert, b.fell_back)
        assert a.confidence == pytest.approx(b.confidence, abs=1e-6)


def test_below_threshold_goes_to_the_fallback(trained):
    _, router = trained
    router.threshold = 1.01  # nothing is that sure
    d = router.route(CLEAR["code"])
    assert d.fell_back and d.expert == "chat" and d.top == "code" and "threshold" in d.reason


@pytest.mark.parametrize("prompt", ["", "   \n\t", b"", None, []])
def test_empty_prompt_goes_to_fallback_with_zero_confidence(trained, prompt):
    _, router = trained
    d = router.route(prompt)
    assert d.expert == "chat" and d.fell_back and d.confidence == 0.0 and d.reason == "empty prompt"


def test_odd_text_is_routed_not_raised(trained):
    _, router = trained
    huge = "x" * 1_000_000 + " " + CLEAR["code"]  # a pasted megabyte, question at the end
    assert router.route(huge).top == "code"
    assert router.route(b"python function \xff\xfe list \xc3").expert in EXAMPLES  # invalid UTF-8
    assert router.route("python \udcff function list").expert in EXAMPLES  # lone surrogate (from argv)
    assert router.route("🙂🙂🙂").expert in EXAMPLES


def test_chat_messages_are_routed_on_the_last_user_message(trained):
    _, router = trained
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": CLEAR["code"]},
        {"role": "assistant", "content": "Sure."},
        {"role": "user", "content": [{"type": "text", "text": CLEAR["cooking"]}]},
    ]
    assert router.route(messages).top == "cooking"


def test_knn_explains_with_nearest_training_prompts(tiny_coe):
    coe = load_coe(tiny_coe)
    router = train_router(examples_from_coe(coe), coe.expert_names, coe.fallback, classifier="knn")
    router.save(coe.router_dir)
    near = Router.load(coe.router_dir).nearest_examples("python list comprehension example please", 3)
    assert near[0][0] == "python list comprehension example" and near[0][1] == "code"
    assert near[0][2] >= near[1][2] >= near[2][2]


def test_linear_explains_with_the_ngrams_that_decided(tiny_coe):
    coe = load_coe(tiny_coe)
    router = train_router(examples_from_coe(coe), coe.expert_names, coe.fallback, classifier="linear")
    terms = [t for t, _ in router.top_terms(CLEAR["code"], "code", 5)]
    assert "python" in terms


def test_target_accuracy_picks_a_threshold_meeting_it_out_of_fold(tiny_coe):
    coe = load_coe(tiny_coe)
    data = examples_from_coe(coe)
    router = train_router(data, coe.expert_names, coe.fallback, target_accuracy=0.99)
    point = [p for p in router.report["oof_curve"] if p["threshold"] == pytest.approx(router.threshold, abs=1e-4)]
    assert point and (point[0]["accuracy_covered"] >= 0.99 or point[0]["coverage"] < 0.2)
    lax = train_router(data, coe.expert_names, coe.fallback, target_coverage=1.0)
    assert lax.threshold <= router.threshold


def test_one_class_only_is_refused_clearly(tiny_coe):
    coe = load_coe(tiny_coe)
    data = [LabelledPrompt(p, "code", "t") for p in EXAMPLES["code"]]
    with pytest.raises(ConfigError, match="one expert only"):
        train_router(data, coe.expert_names, coe.fallback)


def test_empty_training_prompts_are_skipped_with_a_warning(tiny_coe):
    coe = load_coe(tiny_coe)
    data = examples_from_coe(coe) + [LabelledPrompt("  ", "code", "t")]
    router = train_router(data, coe.expert_names, coe.fallback)
    assert any("empty" in w for w in router.report["warnings"])


@pytest.mark.parametrize(
    "line, words",
    [
        (b'{"prompt": "hi", "expert": "astrology"}', ["data.jsonl:2", "astrology", "known"]),
        (b'{"prompt": "hi"', ["data.jsonl:2", "JSON"]),
        (b'{"prompt": 3, "expert": "code"}', ["data.jsonl:2", "'prompt'"]),
        (b'{"prompt": "caf\xe9", "expert": "code"}', ["data.jsonl:2", "UTF-8"]),
        (b'["prompt", "code"]', ["data.jsonl:2", "object"]),
    ],
)
def test_bad_jsonl_lines_name_file_and_line(tmp_path, line, words):
    p = tmp_path / "data.jsonl"
    p.write_bytes(b'{"prompt": "fine", "expert": "code"}\n' + line + b"\n")
    with pytest.raises(ConfigError) as e:
        read_jsonl(p, list(EXAMPLES))
    for w in words:
        assert w in str(e.value)


def test_router_dir_without_a_router_says_how_to_make_one(tmp_path):
    with pytest.raises(ConfigError, match="router train"):
        Router.load(tmp_path)


def test_saved_router_holds_no_pickles(trained):
    coe, _ = trained
    files = {p.name for p in coe.router_dir.iterdir()}
    assert {"router.json", "router.npz"} <= files
    json.loads((coe.router_dir / "router.json").read_text())
    with np.load(coe.router_dir / "router.npz", allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
