"""Delta experts: a fine-tune stored as its base plus a compressed difference (`coeflow delta`),
rebuilt when loaded and served through the store with only the delta on the host tier."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from checkpoints import make_checkpoint
from coeflow.cli import main
from coeflow.errors import CheckpointError, ConfigError
from coeflow.model import load_model
from coeflow.model.convert import delta_checkpoint
from coeflow.model.delta import compress, decompress
from coeflow.model.quant import pack_unsigned, unpack_unsigned


def make_finetune(base: Path, out: Path, seed: int, size: float = 0.05) -> Path:
    """`base` with every tensor moved by noise of `size` times its mean magnitude: a fine-tune."""
    shutil.copytree(base, out)
    tensors = load_file(out / "model.safetensors")
    g = torch.Generator().manual_seed(seed)
    for name, t in tensors.items():
        tensors[name] = t + size * t.abs().mean() * torch.randn(t.shape, generator=g)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("delta")
    base = make_checkpoint(root / "base", "llama-gqa", seed=3)
    return base, make_finetune(base, root / "ft", seed=4)


def _state(path: Path) -> dict[str, torch.Tensor]:
    return dict(load_model(path).state_dict())


def test_bits_are_packed_in_element_order():
    u = torch.zeros(2, 32, dtype=torch.uint8)
    u[0, 0] = u[0, 5] = u[1, 31] = 1
    assert pack_unsigned(u, 1).tolist() == [[1 + 32], [-(1 << 31)]]
    u2 = torch.tensor([[3, 0, 1, 2] * 4], dtype=torch.uint8)
    assert pack_unsigned(u2, 2).view(torch.uint8)[0, 0].item() == 3 | (1 << 4) | (2 << 6)
    for bits in (1, 2, 4, 8):
        v = torch.randint(0, 1 << bits, (3, 64), dtype=torch.uint8)
        assert torch.equal(unpack_unsigned(pack_unsigned(v, bits), bits), v)


def test_one_bit_delta_is_the_sign_times_each_rows_mean_magnitude():
    d = torch.randn(8, 64)
    packed, scale = compress(d, 1, None)
    expected = torch.where(d > 0, 1.0, -1.0) * d.abs().mean(1, keepdim=True)
    assert torch.allclose(decompress(packed, scale, 1), expected)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_low_bit_delta_is_no_worse_than_rounding_at_the_largest_magnitude(bits):
    d = torch.randn(16, 128) ** 3  # heavy-tailed, as deltas are
    packed, scale = compress(d, bits, 32)
    got = ((decompress(packed, scale, bits) - d) ** 2).view(16, 4, 32).sum(-1)
    qmax = (1 << (bits - 1)) - 1
    g = d.view(16, 4, 32)
    plain = g.abs().amax(-1, keepdim=True) / qmax
    rtn = ((torch.round(g / plain).clamp(-qmax - 1, qmax) * plain - g) ** 2).sum(-1)
    assert (got <= rtn * (1 + 1e-5)).all()
    assert scale.shape == (16, 4)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_a_delta_checkpoint_loads_as_base_plus_its_delta(pair, tmp_path, bits):
    base, ft = pair
    out = delta_checkpoint(ft, base, tmp_path / "d", bits, group=32)
    got, b, f = _state(out), _state(base), _state(ft)
    delta_bytes = (out / "model.safetensors").stat().st_size
    assert delta_bytes < (ft / "model.safetensors").stat().st_size * (bits + 1) / 32 + 20_000
    err_delta = max((got[n] - f[n]).abs().max().item() for n in f)
    err_base = max((b[n] - f[n]).abs().max().item() for n in f)
    assert err_delta < err_base / (2 if bits == 1 else 4)  # closer to the fine-tune than its base is
    norm = "model.layers.0.input_layernorm.weight"
    assert torch.equal(got[norm], f[norm])  # vectors are stored whole
    assert (out / "tokenizer.json").is_file()
    spec = json.loads((out / "config.json").read_text())["coeflow_delta"]
    assert not Path(spec["base"]).is_absolute() and (out / spec["base"]).resolve() == base.resolve()
    assert spec["bits"] == bits and len(spec["base_sha256"]) == 64


def test_the_delta_command_writes_and_refuses_by_name(pair, tmp_path, capsys):
    base, ft = pair
    assert main(["delta", str(ft), "--base", str(base), "--bits", "1", "--out", str(tmp_path / "d1")]) == 0
    assert "delta1" in capsys.readouterr().out
    assert main(["delta", str(ft), "--base", str(base), "--bits", "1", "--out", str(tmp_path / "d1")]) != 0
    assert "not an empty directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["delta", str(ft), "--base", str(base), "--bits", "3", "--out", str(tmp_path / "x")])
    assert "invalid choice" in capsys.readouterr().err
    other = make_checkpoint(tmp_path / "other", "llama-gqa", seed=1, hidden_size=32)
    with pytest.raises(CheckpointError, match="shapes differ from its base"):
        delta_checkpoint(ft, other, tmp_path / "x", 1)
    with pytest.raises(ConfigError, match="quantized or a delta"):
        delta_checkpoint(tmp_path / "d1", base, tmp_path / "y", 1)
    with pytest.raises(ConfigError, match="groups of 48"):
        delta_checkpoint(ft, base, tmp_path / "z", 4, group=48)
    assert not (tmp_path / "x").exists() and not (tmp_path / "z").exists()


def _kl(teacher: Path, student: Path, ids: list[int]) -> float:
    """KL divergence of the student's next-token distributions from the teacher's, on `ids`."""
    x = torch.tensor([ids])
    with torch.inference_mode():
        want = load_model(teacher)(x).log_softmax(-1)[0]
        got = load_model(student)(x).log_softmax(-1)[0]
    return float(torch.nn.functional.kl_div(got, want, log_target=True, reduction="batchmean"))


def test_distilled_scales_predict_more_like_the_fine_tune_on_other_text(pair, tmp_path):
    """The scales are fitted on one text; on another the rebuilt model's next-token
    distributions are closer to the fine-tune's than with the plain scales, and the packed
    signs are unchanged."""
    from checkpoints import CORPUS
    from coeflow.model.tokenizer import Tokenizer
    base, ft = pair
    fit, other = CORPUS[: len(CORPUS) // 2], CORPUS[len(CORPUS) // 2:]
    plain = delta_checkpoint(ft, base, tmp_path / "plain", 1)
    tuned = delta_checkpoint(ft, base, tmp_path / "tuned", 1, distill=fit, distill_steps=30, distill_lr=1e-3)
    ids = Tokenizer.from_dir(ft).encode(other)[:200]
    assert _kl(ft, tuned, ids) < 0.9 * _kl(ft, plain, ids)
    a, b = load_file(plain / "model.safetensors"), load_file(tuned / "model.safetensors")
    assert all(torch.equal(a[n], b[n]) for n in a if n.endswith(".delta_packed"))
    assert any(not torch.equal(a[n], b[n]) for n in a if n.endswith(".delta_scale"))
    record = json.loads((tuned / "config.json").read_text())["coeflow_delta"]["distilled"]
    assert record["steps"] == 30 and record["tokens"] > 130


def test_the_delta_command_distils_on_a_text_or_jsonl_file_and_refuses_bad_ones(pair, tmp_path, capsys):
    from checkpoints import CORPUS
    base, ft = pair
    (tmp_path / "ok.jsonl").write_text("\n".join(json.dumps({"text": CORPUS[i:i + 400]}) for i in range(0, 2000, 400)))
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"words": "no text field"}\n')
    (tmp_path / "short.txt").write_text("too short")
    common = ["delta", str(ft), "--base", str(base), "--bits", "1", "--distill-steps", "2"]
    assert main(common + ["--distill", str(tmp_path / "ok.jsonl"), "--out", str(tmp_path / "d")]) == 0
    assert "distilled" in json.loads((tmp_path / "d" / "config.json").read_text())["coeflow_delta"]
    assert main(common + ["--distill", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "x")]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err
    assert main(common + ["--distill", str(tmp_path / "short.txt"), "--out", str(tmp_path / "y")]) == 2
    assert "needs at least" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_a_delta_whose_base_is_missing_or_changed_is_refused_naming_it(pair, tmp_path):
    base, ft = pair
    moved = tmp_path / "base"
    shutil.copytree(base, moved)
    d = delta_checkpoint(ft, moved, tmp_path / "d", 1)
    shutil.rmtree(moved)
    with pytest.raises(CheckpointError, match="its base .*base cannot be read"):
        load_model(d)


def _greedy(path: Path, prompt: list[int], n: int) -> list[int]:
    model = load_model(path)
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt):]


@pytest.mark.e2e
def test_delta_experts_serve_from_their_base_holding_only_the_delta_on_the_host(tmp_path):
    """A CoE of a dense base expert, a delta of it, and a delta whose base the CoE does not
    serve: both deltas answer what their rebuilt checkpoints compute; the host tier holds each
    base once and the deltas' packed bytes; the hidden base is not listed."""
    import httpx
    from openai import OpenAI

    from coe_fixture import start, write_coe
    coe = write_coe(tmp_path / "coe")
    root = coe.parent
    spec = yaml.safe_load(coe.read_text())
    general = root / "experts" / "general"
    other = make_checkpoint(root / "bases" / "other", "llama-gqa", seed=21)
    delta_checkpoint(make_finetune(general, tmp_path / "ft-sql", 5), general, root / "experts" / "sql-d", 1)
    delta_checkpoint(make_finetune(other, tmp_path / "ft-shell", 6), other, root / "experts" / "shell-d", 4, 32)
    for e in spec["experts"]:
        if e["name"] in ("sql", "shell"):
            e["path"] = f"experts/{e['name']}-d"
    coe.write_text(yaml.safe_dump(spec))
    prompt = [1, *range(40, 52)]
    srv, ctx = start(coe)
    with ctx as url:
        client = OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
        got = {name: client.completions.create(model=name, prompt=prompt, max_tokens=8, temperature=0,
                                               extra_body={"ignore_eos": True}).choices[0].text
               for name in ("sql", "shell", "general")}
        experts = {e["name"]: e for e in httpx.get(url.removesuffix("/v1") + "/v1/experts").json()["data"]}
        used = srv.store.used()
    for name in ("sql", "shell"):
        tok = srv.scheduler.backend.runtimes[name].tokenizer
        assert got[name] == tok.decode(_greedy(root / "experts" / f"{name}-d", prompt, 8)), name
    assert got["sql"] != got["general"]
    assert set(experts) == {"sql", "shell", "general"}  # the hidden base is not an expert
    assert experts["sql"]["quantization"] == "delta1" and experts["shell"]["quantization"] == "delta4-g32"
    assert experts["sql"]["base"] == str(general.resolve()) and experts["general"]["base"] is None
    assert experts["general"]["pinned"]  # the base of a delta stays in every tier
    dense = experts["general"]["bytes"]
    assert experts["sql"]["bytes"] * 8 < dense
    assert used["host"] < 2 * dense + 2 * experts["shell"]["bytes"] + 4 * 4096 * 4
    assert used["device"] >= 4 * dense  # two bases and the two rebuilt experts


@pytest.mark.e2e
def test_a_delta_whose_base_is_broken_fails_alone(tmp_path):
    from openai import APIStatusError, OpenAI

    from coe_fixture import start, write_coe
    coe = write_coe(tmp_path / "coe")
    root = coe.parent
    spec = yaml.safe_load(coe.read_text())
    base = make_checkpoint(tmp_path / "base", "llama-gqa", seed=30)
    delta_checkpoint(make_finetune(base, tmp_path / "ft", 7), base, root / "experts" / "sql-d", 1)
    wrong = make_checkpoint(tmp_path / "wrong", "llama-gqa", seed=31, intermediate_size=96)
    delta_checkpoint(make_finetune(base, tmp_path / "ft2", 8), base, root / "experts" / "shell-d", 1)
    cfg = json.loads((root / "experts" / "shell-d" / "config.json").read_text())
    cfg["coeflow_delta"]["base"] = str(wrong)  # a base of other shapes
    (root / "experts" / "shell-d" / "config.json").write_text(json.dumps(cfg))
    t = load_file(base / "model.safetensors")  # the base changed after the delta was made
    t["model.norm.weight"] = t["model.norm.weight"] * 2
    save_file(t, str(base / "model.safetensors"), metadata={"format": "pt"})
    for e in spec["experts"]:
        if e["name"] in ("sql", "shell"):
            e["path"] = f"experts/{e['name']}-d"
    coe.write_text(yaml.safe_dump(spec))
    srv, ctx = start(coe)
    with ctx as url:
        client = OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
        for name, needle in (("sql", "sha256"), ("shell", "shapes differ from its base")):
            with pytest.raises(APIStatusError) as err:
                client.completions.create(model=name, prompt="select", max_tokens=4)
            assert err.value.status_code == 503 and needle in str(err.value.body), name
        assert client.completions.create(model="general", prompt="tell me", max_tokens=4).choices[0].text
        import httpx
        experts = {e["name"]: e for e in httpx.get(url.removesuffix("/v1") + "/v1/experts").json()["data"]}
    assert experts["sql"]["state"] == experts["shell"]["state"] == "failed"
    assert "sha256" in experts["sql"]["error"] and experts["general"]["state"] == "ready"


def test_on_a_cpu_a_rebuilt_expert_reuses_the_memory_of_one_evicted_before_it(pair, tmp_path):
    """Two deltas of one base behind a device tier with room for the base and one rebuilt
    expert: switching between them rebuilds each in the memory the other left (no fresh
    pages a switch), with its own weights each time."""
    from coeflow.backend.real import RealBackend
    from coeflow.backend.real.layout import plan_layout
    from coeflow.coefile import parse_coe
    from coeflow.store import ExpertStore
    base, ft = pair
    d1 = delta_checkpoint(ft, base, tmp_path / "d1", 1)
    d2 = delta_checkpoint(make_finetune(base, tmp_path / "ft2", 9), base, tmp_path / "d2", 1)
    coe = parse_coe({"name": "t", "fallback": "a", "experts": [
        {"name": "a", "path": "d1"}, {"name": "b", "path": "d2"}]}, tmp_path / "coe.yaml")
    dense = plan_layout(base, torch.float32).block_bytes
    expect = {"a": _state(d1), "b": _state(d2)}
    with RealBackend("fp32", "cpu") as backend, \
            ExpertStore(coe, backend, device_mem=2 * dense + 4096, host_mem=4 * dense) as store:
        buffers = []
        for name in ("a", "b", "a", "b"):
            with store.acquire(name) as lease:
                w = lease.weights["model.layers.1.mlp.down_proj.weight"]
                assert torch.equal(w, expect[name]["model.layers.1.mlp.down_proj.weight"]), name
                buffers.append(w.data_ptr())
    assert buffers[1] == buffers[0] and buffers[2] == buffers[0] and buffers[3] == buffers[0]
