"""Quantized experts: `coeflow quantize` writes compressed-tensors' pack-quantized format
(checked against compressed-tensors and transformers themselves), coeflow loads it and
checkpoints those tools wrote, decodes from the packed weights with its CPU kernel, and refuses
what it does not run, by name."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from coeflow.engine import Engine, SamplingParams
from coeflow.engine.layers.cpu import PackedLinear
from coeflow.errors import CheckpointError, UnsupportedModelError
from coeflow.model import load_model
from coeflow.model.convert import quant_scheme, quantize_checkpoint
from coeflow.model.kernels import quant as quant_kernel
from coeflow.model.quant import dequantize, pack, quantize, unpack

ct_helpers = pytest.importorskip("compressed_tensors.compressors.pack_quantized.helpers")

TOKENS = torch.tensor([[1, 17, 42, 99, 7, 250, 31, 64, 5, 12]])


@pytest.fixture(scope="module")
def dense(tmp_path_factory) -> Path:
    from checkpoints import make_checkpoint
    return make_checkpoint(tmp_path_factory.mktemp("dense") / "ckpt", "llama-gqa", seed=3)


@pytest.fixture(scope="module")
def quantized(dense, tmp_path_factory) -> dict[str, Path]:
    """int8 with the output head quantized too, int4 with it dense."""
    root = tmp_path_factory.mktemp("quantized")
    return {"int8": quantize_checkpoint(dense, root / "int8", quant_scheme(8, lm_head=True)),
            "int4": quantize_checkpoint(dense, root / "int4", quant_scheme(4, 32))}


@pytest.mark.parametrize("bits", [4, 8])
def test_packing_is_compressed_tensors_own(bits):
    q = torch.randint(-(1 << (bits - 1)), 1 << (bits - 1), (6, 64), dtype=torch.int8)
    theirs = ct_helpers.pack_to_int32(q, bits)
    assert torch.equal(pack(q, bits), theirs)
    assert torch.equal(unpack(theirs, bits), q)


def test_round_to_nearest_error_is_within_half_a_step():
    w = torch.randn(16, 256)
    for bits, group in ((8, None), (4, 32), (4, 128)):
        packed, scale = quantize(w, bits, group)
        g = group or 256
        # each group's largest magnitude lands on the largest positive value, 2^(bits-1) - 1
        torch.testing.assert_close(scale, w.abs().reshape(16, 256 // g, g).amax(-1) / ((1 << (bits - 1)) - 1))
        step = scale.repeat_interleave(g, dim=1)
        err = (dequantize(packed, scale, bits, torch.float32) - w).abs()
        assert (err <= step / 2 + 1e-6).all(), (bits, group)


@pytest.mark.parametrize("name", ["int8", "int4"])
def test_transformers_reads_our_checkpoint_as_we_do(quantized, dense, name):
    """transformers (through compressed-tensors) decompresses the file coeflow wrote and
    computes the same logits as coeflow's model on it."""
    from transformers import AutoModelForCausalLM
    theirs = AutoModelForCausalLM.from_pretrained(quantized[name], dtype=torch.float32)
    with torch.no_grad():
        want = theirs(TOKENS).logits
    ours = load_model(quantized[name])(TOKENS)
    torch.testing.assert_close(ours, want, rtol=1e-4, atol=1e-4)
    exact = load_model(dense)(TOKENS)
    rel = ((ours - exact).norm() / exact.norm()).item()
    assert rel < (0.02 if name == "int8" else 0.25), rel  # quantized, not garbage


def test_we_read_a_checkpoint_transformers_wrote(quantized, tmp_path):
    """A pack-quantized checkpoint saved by transformers (compressed-tensors packing the
    weights) loads in coeflow and computes what transformers computes on it."""
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(quantized["int4"], dtype=torch.float32)
    model.save_pretrained(tmp_path / "resaved")
    with torch.no_grad():
        want = AutoModelForCausalLM.from_pretrained(tmp_path / "resaved", dtype=torch.float32)(TOKENS).logits
    torch.testing.assert_close(load_model(tmp_path / "resaved")(TOKENS), want, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not quant_kernel.load(), reason="the quantized CPU kernel needs x86-64 with AVX2 and gcc/g++")
@pytest.mark.parametrize("bits,group", [(8, None), (4, 32), (4, 128)])
@pytest.mark.parametrize("rows", [1, 3, 8])
@pytest.mark.parametrize("scale_dtype", [torch.float32, torch.bfloat16])
def test_kernel_matches_the_dequantized_product(bits, group, rows, scale_dtype):
    w = torch.randn(72, 256)
    packed, scale = quantize(w, bits, group)
    scale = scale.to(scale_dtype)
    wide = torch.zeros(72, packed.shape[1] + 8, dtype=torch.int32)
    wide[:, :packed.shape[1]] = packed  # rows a stride apart, as views of a pool may be
    x = torch.randn(rows, 256)
    want = x @ dequantize(packed, scale, bits, torch.float32).T
    for p in (packed, wide[:, :packed.shape[1]]):
        torch.testing.assert_close(quant_kernel.quant_linear(x, [p], [scale], bits), want, rtol=1e-4, atol=1e-3)
    # in bf16, and beside a second weight read from the same x, each output as alone
    other, other_scale = quantize(torch.randn(40, 256), bits, group)
    other_scale = other_scale.to(scale_dtype)
    both = quant_kernel.quant_linear(x.bfloat16(), [packed, other], [scale, other_scale], bits)
    xb = x.bfloat16().float()
    torch.testing.assert_close(both[:, :72], xb @ dequantize(packed, scale, bits, torch.float32).T, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(both[:, 72:], xb @ dequantize(other, other_scale, bits, torch.float32).T,
                               rtol=1e-4, atol=1e-3)


@pytest.mark.skipif(not quant_kernel.load(), reason="the quantized CPU kernel needs x86-64 with AVX2 and gcc/g++")
def test_kernel_refuses_operands_it_cannot_take():
    packed, scale = quantize(torch.randn(8, 64), 4, 32)
    with pytest.raises(RuntimeError, match="rows"):
        quant_kernel.quant_linear(torch.randn(9, 64), [packed], [scale], 4)
    with pytest.raises(RuntimeError, match="scales must be"):
        quant_kernel.quant_linear(torch.randn(1, 96), [packed], [scale], 4)  # groups of 48
    with pytest.raises(RuntimeError, match="packed weight"):
        quant_kernel.quant_linear(torch.randn(1, 64), [packed], [scale], 8)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["int8", "int4"])
def test_fused_engine_decodes_as_the_model_computes(quantized, name):
    """The compiled decode step (the packed kernel where it loads) picks the tokens the plain
    model's maths picks, prompt by prompt, in one batch of unequal prompts."""
    prompts = [[1, 17, 42, 99], [1, 5], [1, 250, 31, 64, 5, 12, 7]]
    params = SamplingParams(max_tokens=10, temperature=0)
    eager = Engine.from_checkpoint(quantized[name], dtype="fp32", fused=False).generate(prompts, params, frozenset())
    engine = Engine.from_checkpoint(quantized[name], dtype="fp32", fused=True)
    if quant_kernel.load():  # the step reads the packed weights, not dequantized copies
        assert any(isinstance(m, PackedLinear) for m in engine.runner.model.modules())
    fused = engine.generate(prompts, params, frozenset())
    assert [c.token_ids for c in fused] == [c.token_ids for c in eager]
    model = load_model(quantized[name])
    ids = list(prompts[0])
    for _ in range(10):  # the first prompt again, by full forward passes
        ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    assert eager[0].token_ids == ids[len(prompts[0]):]


def test_quantize_command_writes_a_loadable_copy_and_refuses_bad_requests(dense, tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "coeflow", "quantize", *map(str, a)],
                                    capture_output=True, text=True)
    done = run(dense, "--to", "int4", "--group-size", "32", "--out", tmp_path / "q")
    assert done.returncode == 0, done.stderr
    assert "int4-g32" in done.stdout and "smaller" in done.stdout
    cfg = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    assert cfg["format"] == "pack-quantized" and cfg["config_groups"]["group_0"]["weights"]["num_bits"] == 4
    assert (tmp_path / "q" / "tokenizer.json").is_file()
    again = run(dense, "--to", "int8", "--out", tmp_path / "q")
    assert again.returncode == 2 and "not an empty directory" in again.stderr
    twice = run(tmp_path / "q", "--to", "int8", "--out", tmp_path / "q2")
    assert twice.returncode == 2 and "already quantized" in twice.stderr
    groups = run(dense, "--to", "int4", "--out", tmp_path / "q3")  # 64 inputs, groups of 128
    assert groups.returncode == 2 and "--group-size" in groups.stderr and "q_proj" in groups.stderr
    assert not (tmp_path / "q3").exists() or not any((tmp_path / "q3").iterdir())


def _edit_config(src: Path, dst: Path, change) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    change(cfg["quantization_config"])
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize("change,needle", [
    (lambda q: q.update(quant_method="awq"), "quant_method 'awq'"),
    (lambda q: q.update(format="marlin-24"), "format 'marlin-24'"),
    (lambda q: q["config_groups"]["group_0"]["weights"].update(symmetric=False), "asymmetric"),
    (lambda q: q["config_groups"]["group_0"]["weights"].update(num_bits=2), "2 bits"),
    (lambda q: q["config_groups"]["group_0"].update(input_activations={"num_bits": 8}), "activation"),
    (lambda q: q["config_groups"]["group_0"]["weights"].update(type="float"), "type 'float'"),
])
def test_unsupported_schemes_are_refused_by_name(quantized, tmp_path, change, needle):
    bad = _edit_config(quantized["int4"], tmp_path / "bad", change)
    with pytest.raises(UnsupportedModelError, match=needle):
        load_model(bad)


def test_packed_tensor_of_the_wrong_shape_or_dtype_is_named(quantized, tmp_path):
    from safetensors.torch import load_file, save_file
    for what, edit, needle in (
            ("shape", lambda t: t[:, :-1].contiguous(), "shape"),
            ("dtype", lambda t: t.float(), "expected int32")):
        bad = tmp_path / what
        shutil.copytree(quantized["int8"], bad)
        tensors = load_file(bad / "model.safetensors")
        name = "model.layers.1.mlp.up_proj.weight_packed"
        tensors[name] = edit(tensors[name])
        save_file(tensors, bad / "model.safetensors")
        with pytest.raises(CheckpointError, match=f"up_proj.weight_packed.*{needle}"):
            load_model(bad)


@pytest.mark.e2e
def test_a_coe_entry_quantized_on_first_use_serves_beside_dense_experts(tmp_path, monkeypatch):
    """`quantize: int8` in a CoE entry: the copy is made once into coeflow's cache and served
    through the store (layout, pool, integrity checks) and the HTTP server, answering what the
    copy computes, beside dense experts, with its packed bytes counted; a second start reuses it."""
    import httpx
    import yaml
    from openai import OpenAI

    from coe_fixture import start, write_coe
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    coe = write_coe(tmp_path / "coe")
    spec = yaml.safe_load(coe.read_text())
    spec["experts"][0]["quantize"] = "int8"  # sql
    coe.write_text(yaml.safe_dump(spec))
    prompt = [1, *range(40, 52)]
    for attempt in range(2):
        srv, ctx = start(coe)
        with ctx as url:
            client = OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
            got = client.completions.create(model="sql", prompt=prompt, max_tokens=8, temperature=0,
                                            extra_body={"ignore_eos": True})
            other = client.completions.create(model="shell", prompt=prompt, max_tokens=8, temperature=0)
            experts = {e["name"]: e for e in httpx.get(url.removesuffix("/v1") + "/v1/experts").json()["data"]}
        copies = list((tmp_path / "cache" / "coeflow" / "quantized").iterdir())
        assert len(copies) == 1 and copies[0].name.startswith("sql-int8-")
        if attempt == 0:
            made = (copies[0] / "model.safetensors").stat().st_mtime_ns
    assert (copies[0] / "model.safetensors").stat().st_mtime_ns == made  # reused, not made again
    model = load_model(copies[0])
    ids = list(prompt)
    for _ in range(8):
        ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    tok = srv.scheduler.backend.runtimes["sql"].tokenizer
    assert got.choices[0].text == tok.decode(ids[len(prompt):])
    assert other.choices[0].text  # the dense experts serve beside it
    assert experts["sql"]["quantization"] == "int8" and experts["shell"]["quantization"] is None
    assert experts["sql"]["bytes"] < 0.6 * experts["shell"]["bytes"]


@pytest.mark.e2e
def test_a_coe_entry_whose_source_fails_its_checksum_is_not_quantized_and_fails_alone(tmp_path, monkeypatch):
    import yaml
    from openai import APIStatusError, OpenAI

    from coe_fixture import start, write_coe
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    coe = write_coe(tmp_path / "coe")
    spec = yaml.safe_load(coe.read_text())
    spec["experts"][0].update(quantize="int4", sha256="0" * 64)
    coe.write_text(yaml.safe_dump(spec))
    srv, ctx = start(coe)
    with ctx as url:
        client = OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
        with pytest.raises(APIStatusError) as e:
            client.completions.create(model="sql", prompt="select", max_tokens=4)
        assert e.value.status_code == 503 and "sha256" in str(e.value)
        other = client.completions.create(model="shell", prompt="ls", max_tokens=4)  # the others serve
        assert other.choices[0].finish_reason in ("stop", "length")
    assert not (tmp_path / "cache" / "coeflow" / "quantized").exists() or \
        not any((tmp_path / "cache" / "coeflow" / "quantized").iterdir())
