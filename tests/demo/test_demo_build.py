"""The demo CoE, built small (QUICK settings, seconds): real Hugging Face checkpoints,
deterministic, cached, specialised experts, a routed CoE that beats every single expert."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from coeflow.coefile import load_coe
from coeflow.demo.build import QUICK, build_demo
from coeflow.demo.perplexity import perplexity_report, read_samples
from coeflow.router import Router, load_router_for_coe, train_router, read_jsonl
from coeflow.router.encoders import LlamaHiddenStateEncoder

pytestmark = pytest.mark.slow

NAMES = ["python", "math", "sql", "shell", "general"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("demo")
    build_demo(d, seed=0, settings=QUICK, progress=False)
    return d


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_coe_file_lists_the_five_experts_with_general_as_fallback(demo):
    coe = load_coe(demo / "coe.yaml")
    assert coe.expert_names == NAMES and coe.fallback == "general"
    for e in coe.experts:
        assert e.description and len(e.examples) >= 5
        assert e.path.is_dir() and e.path.parent == (demo / "experts").resolve()


def test_experts_are_llama_checkpoints_transformers_loads_and_our_engine_agrees(demo):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from coeflow.model import load_model

    path = demo / "experts" / "sql"
    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (path / f).is_file()
    hf = AutoModelForCausalLM.from_pretrained(path).eval()
    assert hf.config.model_type == "llama"
    tok = AutoTokenizer.from_pretrained(path)
    chat = tok.apply_chat_template([{"role": "user", "content": "list users"}], tokenize=False,
                                   add_generation_prompt=True)
    assert chat.endswith("<|assistant|>\n") and "list users" in chat
    ids = torch.tensor([tok("SELECT name FROM users WHERE id = 3;")["input_ids"]])
    assert ids[0, 0].item() == tok.bos_token_id
    with torch.inference_mode():
        ours = load_model(path)(ids)
        theirs = hf(input_ids=ids).logits
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_second_build_is_cached_and_touches_nothing(demo):
    before = {p: p.stat().st_mtime_ns for p in demo.rglob("*") if p.is_file()}
    result = build_demo(demo, seed=0, settings=QUICK, progress=False)
    assert result.cached
    assert {p: p.stat().st_mtime_ns for p in demo.rglob("*") if p.is_file()} == before


def test_an_edited_word_list_retrains_the_router_and_keeps_the_experts(demo, tmp_path, package_copy, monkeypatch):
    from coeflow.demo import stamp

    built = tmp_path / "built"
    shutil.copytree(demo, built)
    models = {p: p.stat().st_mtime_ns for sub in ("experts", "deltas") for p in (built / sub).rglob("model.safetensors")}
    router = (built / "router" / "router.npz").stat().st_mtime_ns
    keywords = package_copy / "demo" / "data" / "prompts" / "sql" / "keywords.txt"
    keywords.write_text(keywords.read_text() + "QUALIFY\n")
    monkeypatch.setattr(stamp, "PACKAGE_DIR", package_copy)  # the build now sees the edited copy
    assert not build_demo(built, seed=0, settings=QUICK, progress=False).cached
    assert {p: p.stat().st_mtime_ns for p in models} == models and len(models) == 2 * len(NAMES)  # kept
    assert (built / "router" / "router.npz").stat().st_mtime_ns != router
    assert build_demo(built, seed=0, settings=QUICK, progress=False).cached


def test_same_seed_gives_identical_weights_another_seed_does_not(demo, tmp_path):
    again = tmp_path / "again"
    build_demo(again, seed=0, settings=QUICK, progress=False)
    for name in ("math", "general"):
        assert _digest(again / "experts" / name / "model.safetensors") == _digest(demo / "experts" / name / "model.safetensors")
    assert _digest(again / "tokenizer" / "tokenizer.json") == _digest(demo / "tokenizer" / "tokenizer.json")
    assert (again / "router" / "router.npz").read_bytes() == (demo / "router" / "router.npz").read_bytes()
    other = tmp_path / "other"
    build_demo(other, seed=1, settings=QUICK, progress=False)
    assert _digest(other / "experts" / "math" / "model.safetensors") != _digest(demo / "experts" / "math" / "model.safetensors")


def test_experts_specialise_and_the_routed_coe_beats_every_single_expert(demo):
    coe = load_coe(demo / "coe.yaml")
    rep = perplexity_report(coe, read_samples(demo / "data" / "heldout_text.jsonl"), load_router_for_coe(coe))
    for domain in NAMES:
        row = rep["rows"][domain]
        assert min(NAMES, key=lambda e: row[e]) == domain, (domain, row)
    mixed = rep["rows"]["mixed"]
    assert mixed["routed"] < min(mixed[e] for e in NAMES)
    assert rep["all_specialised"] and rep["coe_beats_every_single_expert"]


def test_experts_are_fine_tunes_of_one_base_and_their_one_bit_deltas_serve_as_a_coe(demo):
    """Every expert starts from base/ (trained on every domain); coe-delta1.yaml is the same CoE
    from 1-bit deltas of them, a small fraction of the bytes, still specialised."""
    from coeflow.model import load_model
    from coeflow.model.delta import DeltaSpec
    base = load_model(demo / "base").state_dict()
    coe = load_coe(demo / "coe-delta1.yaml")
    assert coe.expert_names == NAMES
    for e in coe.experts:
        spec = DeltaSpec.of(e.path)
        assert spec is not None and spec.base == (demo / "base").resolve() and spec.bits == 1
        full = (demo / "experts" / e.name / "model.safetensors").stat().st_size
        assert (e.path / "model.safetensors").stat().st_size * 8 < full
        tuned = load_model(demo / "experts" / e.name).state_dict()
        rebuilt = load_model(e.path).state_dict()
        near = sum(float((rebuilt[n] - tuned[n]).norm()) for n in tuned)
        assert near < sum(float((base[n] - tuned[n]).norm()) for n in tuned), e.name
    rep = perplexity_report(coe, read_samples(demo / "data" / "heldout_text.jsonl"), load_router_for_coe(coe))
    assert rep["coe_beats_every_single_expert"]


def test_the_monolith_is_the_base_tuned_on_every_domain_and_the_build_measured_it_beside_the_coe(demo):
    """coe-monolith.yaml: one model, a fine-tune of the same base, trained on the union of the
    experts' data; data/tasks_eval.json: the build's `eval tasks` of every system, the monolith's
    rows among them (QUICK models get nothing right: the rows are there, not the accuracy)."""
    import json

    from coeflow.model import load_model
    mono = load_coe(demo / "coe-monolith.yaml")
    assert mono.expert_names == ["monolith"]
    base, tuned = load_model(demo / "base").state_dict(), load_model(mono.experts[0].path).state_dict()
    assert tuned.keys() == base.keys() and any(not torch.equal(tuned[n], base[n]) for n in base)
    report = json.loads((demo / "data" / "tasks_eval.json").read_text())
    systems = {r["system"] for r in report["rows"]}
    assert systems == set(NAMES) | {"coe", "oracle", "monolith"}
    assert {r["n"] for r in report["rows"] if r["domain"] == "mixed"} == {5 * QUICK.eval_tasks}


def test_router_beside_the_coe_routes_pasted_code(demo):
    router = Router.load(demo / "router")
    assert router.route("SELECT name, COUNT(*) FROM orders GROUP BY name;").expert == "sql"
    assert router.route("tar -czvf backup.tar.gz /var/log").expert == "shell"


def test_llama_hidden_state_encoder_trains_a_working_router(demo):
    """Samba-CoE derives its router from its base LLM: here, the general expert's states."""
    coe = load_coe(demo / "coe.yaml")
    # A third of the generated prompts: the LLM encodes each one, so this keeps the test
    # quick; every expert is still represented.
    data = read_jsonl(demo / "data" / "router_train.jsonl", coe.expert_names)[::3]
    enc = LlamaHiddenStateEncoder(demo / "experts" / "general", max_tokens=64)
    router = train_router(data, coe.expert_names, coe.fallback, encoder=enc, classifier="linear", folds=3)
    router.save(demo / "router-llama")
    loaded = Router.load(demo / "router-llama")
    assert loaded.encoder.kind == "llama"
    d = loaded.route("SELECT id FROM users;")
    assert d.candidates and sum(p for _, p in d.candidates) == pytest.approx(1.0)
    assert router.report["oof_accuracy"] > 0.3  # above chance (0.2, five balanced experts): it carries signal
