"""The llama.cpp peer of `bench serve --workload mixed`: the experts are converted by llama.cpp's
own converter (a vocabulary trained here is answered GPT-2's pre-tokenizer only when it splits
like GPT-2), and one llama-server in router mode serves them all. Run against stand-ins for the
converter and the server (tests/server/fake_llama_cpp: a real build takes a quarter of an hour);
the bench's figures come from the real ones."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from coeflow.bench.gguf_convert import splits_like_gpt2
from coeflow.bench.llama_peer import convert_experts, llama_tree
from coeflow.coefile import load_coe
from coeflow.errors import ConfigError

FAKE = Path(__file__).parent / "fake_llama_cpp"


def test_a_byte_level_bpe_vocabulary_splits_like_gpt2_and_one_with_a_normalizer_does_not(checkpoints, tmp_path):
    tokenizer = checkpoints["llama-gqa"] / "tokenizer.json"
    assert splits_like_gpt2(tokenizer)
    spec = json.loads(tokenizer.read_text())
    for change in ({"normalizer": {"type": "NFC"}}, {"pre_tokenizer": {**spec["pre_tokenizer"], "add_prefix_space": True}},
                   {"pre_tokenizer": {"type": "Whitespace"}}):
        other = tmp_path / "tokenizer.json"
        other.write_text(json.dumps({**spec, **change}))
        assert not splits_like_gpt2(other), change


def test_the_converter_is_found_beside_the_server_and_its_absence_is_a_clear_error(tmp_path):
    assert llama_tree(FAKE / "bin" / "llama-server") == FAKE.resolve()
    with pytest.raises(ConfigError, match="no such file"):
        llama_tree(tmp_path / "llama-server")
    lone = tmp_path / "bin" / "llama-server"
    lone.parent.mkdir()
    lone.write_text("")
    with pytest.raises(ConfigError, match="convert_hf_to_gguf.py"):
        llama_tree(lone)


def test_experts_convert_at_coeflows_dtype_and_a_vocabulary_that_does_not_split_like_gpt2_is_refused(
        coe_file, tmp_path):
    experts = {e.name: e.path for e in load_coe(coe_file).experts}
    out = convert_experts(FAKE, experts, tmp_path / "gguf", "fp32")
    assert sorted(f.stem for f in out.glob("*.gguf")) == sorted(experts)
    assert (out / "general.gguf").read_text().split() == ["gpt-2", "f32"]
    general = {"general": tmp_path / "general"}
    shutil.copytree(experts["general"], general["general"])
    (out / "general.gguf").write_text("kept")
    os.utime(out / "general.gguf", (0, max(f.stat().st_mtime for f in general["general"].iterdir()) + 10))
    assert (convert_experts(FAKE, general, out, "fp32") / "general.gguf").read_text() == "kept"  # reused
    weights = general["general"] / "model.safetensors"  # the expert retrained: its files are newer
    os.utime(weights, (0, (out / "general.gguf").stat().st_mtime + 10))
    assert (convert_experts(FAKE, general, out, "fp32") / "general.gguf").read_text().split() == ["gpt-2", "f32"]
    odd = tmp_path / "odd"
    shutil.copytree(experts["general"], odd)
    spec = json.loads((odd / "tokenizer.json").read_text())
    (odd / "tokenizer.json").write_text(json.dumps({**spec, "normalizer": {"type": "NFC"}}))
    with pytest.raises(ConfigError, match="(?s)converter failed on .*odd.*not recognized"):
        convert_experts(FAKE, {"odd": odd}, tmp_path / "gguf", "fp32")
    assert not (tmp_path / "gguf" / "odd.gguf").exists()  # nothing half-written is reused later


def test_the_mixed_bench_runs_the_peer_in_router_mode_over_every_expert(coe_file, tmp_path):
    from coeflow.bench.mixed import run_mixed
    report = run_mixed(coe_file, requests=6, rate=20.0, servers=("peer",), peer_server=FAKE / "bin" / "llama-server",
                       peer_models=tmp_path / "gguf")
    assert report["servers"] == ["peer"]
    assert (report["peer"]["completed"], report["peer"]["failed"]) == (6, 0)
    assert report["peer"]["prefix_hit_ttft_p50_s"] > 0
