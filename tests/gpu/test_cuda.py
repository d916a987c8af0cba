"""The CUDA paths: the compiled step under CUDA graphs, the store's pinned pool and copy
stream, and the server on a GPU. Skipped where no GPU is present (CI); they run on a lent
GPU machine through scripts/device_check.sh."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from checkpoints import make_checkpoint

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

PROMPTS = [[1, 17, 42, 99, 7], [1, 5, 6, 250, 251, 252, 253]]


def _graphs(engine) -> list:
    """The CUDA graphs the engine's decode steps replay now (its runner: RunAhead(CudaGraphRunner))."""
    return engine.runner.cuda_graphs


def _graphed(engine) -> bool:
    """Whether the engine still decodes with its compiled step replayed as CUDA graphs."""
    return engine.fused and not engine.runner.capture_failed and len(_graphs(engine)) > 0


def test_fused_cuda_step_matches_eager_switches_without_recompiling_and_uses_cuda_graphs(tmp_path):
    from coeflow.engine import Engine, SamplingParams
    from coeflow.model import ModelConfig, load_weights
    a = make_checkpoint(tmp_path / "a", "llama-gqa", seed=1)
    b = make_checkpoint(tmp_path / "b", "llama-gqa", seed=2)
    params = SamplingParams(max_tokens=12, ignore_eos=True)
    on_cpu = [c.token_ids for c in Engine.from_checkpoint(a, fused=False, device="cpu").generate(PROMPTS, params)]
    eager = Engine.from_checkpoint(a, fused=False, device="cuda")
    want_a = [c.token_ids for c in eager.generate(PROMPTS, params)]
    assert want_a == on_cpu
    eager.load(b)
    want_b = [c.token_ids for c in eager.generate(PROMPTS, params)]
    assert want_a != want_b

    fused = Engine.from_checkpoint(a, fused=True, device="cuda")
    assert [c.token_ids for c in fused.generate(PROMPTS, params)] == want_a
    graphs = counters["stats"]["unique_graphs"]
    assert fused.fused and graphs >= 1
    fused.load(b)  # other device addresses: a graph is captured for them, nothing recompiles
    assert [c.token_ids for c in fused.generate(PROMPTS, params)] == want_b
    fused.set_weights(load_weights(a, ModelConfig.from_dir(a), torch.float32, "cuda"), name="a again")
    assert [c.token_ids for c in fused.generate(PROMPTS, params)] == want_a
    assert counters["stats"]["unique_graphs"] == graphs, "switching experts recompiled the decode step"
    assert _graphed(fused), "the compiled step ran without CUDA graphs"
    assert len(_graphs(fused)) >= 2  # one per set of weight addresses (a's may be reused)

    sampled = SamplingParams(max_tokens=12, temperature=0.7, seed=5)  # the host-side sampling path
    eager.load(a)
    assert fused.generate(PROMPTS, sampled)[0].token_ids == eager.generate(PROMPTS, sampled)[0].token_ids


def test_engines_of_one_shape_in_other_threads_stay_fused(tmp_path):
    """What `bench serve` and a server with several experts do: engines of the same shape
    built one after another, each driven from a thread of its own (a scheduler's), in one
    process. Each must keep its compiled, graphed step (a run on torch 2.11 saw the later
    ones fall back to eager)."""
    import threading

    from coeflow.engine import Engine, SamplingParams
    a = make_checkpoint(tmp_path / "a", "llama-gqa", seed=1)
    params = SamplingParams(max_tokens=6, ignore_eos=True)
    want = [c.token_ids for c in Engine.from_checkpoint(a, fused=False, device="cuda").generate(PROMPTS[:1], params)]
    for _ in range(3):
        engine = Engine.from_checkpoint(a, fused=True, device="cuda")
        got = []
        worker = threading.Thread(target=lambda: got.append(engine.generate(PROMPTS[:1], params)[0].token_ids))
        worker.start()
        worker.join()
        assert got == want and _graphed(engine)


def test_batches_that_change_size_keep_their_graphs(tmp_path, monkeypatch):
    """A server's batches change size back and forth: each bucket's graph is captured once
    and replayed when the bucket comes back (one KV pool per engine: engine.paged.KVPool)."""
    from coeflow.engine import Engine, SamplingParams
    from coeflow.engine.runners.cuda_graphs import CudaGraphRunner
    captures = []
    capture = CudaGraphRunner._capture
    monkeypatch.setattr(CudaGraphRunner, "_capture", lambda self, *args: captures.append(1) or capture(self, *args))
    a = make_checkpoint(tmp_path / "a", "llama-gqa", seed=1)
    params = SamplingParams(max_tokens=6, ignore_eos=True)
    eager = Engine.from_checkpoint(a, fused=False, device="cuda")
    fused = Engine.from_checkpoint(a, fused=True, device="cuda")
    for prompts in (PROMPTS[:1], PROMPTS, PROMPTS[:1], PROMPTS):
        want = [c.token_ids for c in eager.generate(prompts, params)]
        assert [c.token_ids for c in fused.generate(prompts, params)] == want
    assert len(captures) == 2 and len(_graphs(fused)) == 2 and _graphed(fused)


def test_triton_gemv_in_the_compiled_step_decodes_as_cublas_does(tmp_path, monkeypatch):
    """With `triton_gemv` (a CUDA engine's default) and the kernel chosen for every product (forced here: on these tiny
    shapes cuBLAS may win the timing), the compiled, graphed step gives eager's tokens at
    batch 1 (kernel) and 2 (cuBLAS), and a second expert reuses the step. The timing itself
    runs on a 7B shape and picks a config or cuBLAS, once."""
    from coeflow.engine import Engine, SamplingParams
    from coeflow.model.kernels import gpu_gemv
    chosen = gpu_gemv.fastest(4096, 4096, torch.bfloat16, torch.device("cuda"))
    assert chosen is None or chosen in gpu_gemv.CONFIGS
    assert gpu_gemv.fastest(4096, 4096, torch.bfloat16, torch.device("cuda")) is chosen
    monkeypatch.setattr(gpu_gemv, "fastest", lambda *args, **kw: gpu_gemv.CONFIGS[1])
    calls = []
    linear = gpu_gemv.linear
    monkeypatch.setattr(gpu_gemv, "linear",
                        lambda *args: calls.append(torch.compiler.is_compiling()) or linear(*args))
    a = make_checkpoint(tmp_path / "a", "llama-bias", seed=1)
    b = make_checkpoint(tmp_path / "b", "llama-bias", seed=2)
    params = SamplingParams(max_tokens=8, ignore_eos=True)
    eager = Engine.from_checkpoint(a, fused=False, device="cuda")
    fused = Engine.from_checkpoint(a, fused=True, device="cuda")
    assert fused.runner.layers.gemv
    for path in (a, b, a):
        eager.load(path)
        fused.load(path)
        for prompts in (PROMPTS[:1], PROMPTS):
            want = [c.token_ids for c in eager.generate(prompts, params)]
            assert [c.token_ids for c in fused.generate(prompts, params)] == want, (path, len(prompts))
    assert any(calls), "the compiled step never called the kernel"
    assert len(fused.runner._steps) == 1 and _graphed(fused)


def test_store_copies_host_to_device_through_the_pinned_pool(tmp_path):
    from safetensors.torch import load_file

    from coeflow.backend.real import RealBackend
    from coeflow.coefile import parse_coe
    from coeflow.store import ExpertStore
    a = make_checkpoint(tmp_path / "a", "llama-gqa", seed=1)
    b = make_checkpoint(tmp_path / "b", "llama-gqa", seed=2)
    coe = parse_coe({"name": "t", "fallback": "a", "experts": [{"name": "a", "path": "a"}, {"name": "b", "path": "b"}]},
                    tmp_path / "coe.yaml")
    nbytes = sum(f.stat().st_size for f in a.glob("*.safetensors"))
    with ExpertStore(coe, RealBackend("fp32", "cuda"), device_mem=int(1.5 * nbytes), host_mem=3 * nbytes) as store:
        assert store.device_copies and store.backend._host.buffer.is_pinned()
        store.load("a")
        with store.acquire("b") as lease:  # evicts a from the device, copies b host <- disk -> device
            assert lease.source_tier == "disk"
            want = load_file(b / "model.safetensors")
            for name, t in lease.weights.items():
                assert t.device.type == "cuda"
                torch.testing.assert_close(t.cpu(), want[name].float(), rtol=0, atol=0)
        assert store.tier_of("a") == "host"
        with store.acquire("a") as lease:
            assert lease.source_tier == "host"
            w = load_file(a / "model.safetensors")["model.layers.0.mlp.up_proj.weight"]
            assert torch.equal(lease.weights["model.layers.0.mlp.up_proj.weight"].cpu(), w.float())


def test_server_on_cuda_switches_experts_under_fused_decode(coe_file):
    """The whole request path on a GPU: device tier of one expert, so alternating requests
    switch host -> device each time, each answer equal to the eager engine's on that expert."""
    from openai import OpenAI

    from coe_fixture import start
    from coeflow.coefile import load_coe
    from coeflow.engine import Engine, SamplingParams
    coe = load_coe(coe_file)
    paths = {e.name: e.path for e in coe.experts}
    nbytes = sum(f.stat().st_size for f in paths["sql"].glob("*.safetensors"))
    prompt = "select name from users"
    srv, ctx = start(coe_file, device="cuda", fused=True, device_mem=int(1.2 * nbytes))
    want = {}
    for name in ("sql", "shell"):  # what the eager engine says, with the server's own EOS ids
        rt = srv.runtimes[name]
        eng = Engine.from_checkpoint(paths[name], fused=False, device="cuda")
        want[name] = eng.generate([rt.tokenizer.encode(prompt)], SamplingParams(max_tokens=8, temperature=0),
                                  rt.eos_ids, rt.tokenizer.decode)[0].text
    with ctx as url:
        client = OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)
        for name in ("sql", "shell", "sql", "shell"):
            r = client.completions.create(model=name, prompt=prompt, max_tokens=8, temperature=0)
            assert r.choices[0].text == want[name], name
        tiers = {s.name: s.tier for s in srv.store.status()}
        assert list(tiers.values()).count("device") == 1
        engines = list(srv.scheduler.backend._engines.values())
        assert engines and all(_graphed(e) for e in engines)


def test_a_delta_expert_is_rebuilt_in_its_device_slot_from_the_base_there(tmp_path):
    """On CUDA the base lies in the device slab once; a delta expert's switch copies its delta
    and rebuilds it into its slot, equal to the rebuilt checkpoint's weights."""
    from safetensors.torch import load_file, save_file

    from coeflow.backend.real import RealBackend
    from coeflow.coefile import parse_coe
    from coeflow.model import load_model
    from coeflow.model.convert import delta_checkpoint
    from coeflow.store import ExpertStore
    base = make_checkpoint(tmp_path / "base", "llama-gqa", seed=1)
    ft = tmp_path / "ft"
    ft.mkdir()
    tensors = {n: t * 1.05 for n, t in load_file(base / "model.safetensors").items()}
    save_file(tensors, str(ft / "model.safetensors"), metadata={"format": "pt"})
    for f in base.iterdir():
        if f.name != "model.safetensors":
            (ft / f.name).write_bytes(f.read_bytes())
    delta_checkpoint(ft, base, tmp_path / "d", 1)
    coe = parse_coe({"name": "t", "fallback": "d", "experts": [{"name": "d", "path": "d"}]}, tmp_path / "coe.yaml")
    want = load_model(tmp_path / "d").state_dict()
    with RealBackend("fp32", "cuda") as backend, ExpertStore(coe, backend, device_mem=None, host_mem=None) as store:
        with store.acquire("d") as lease:
            assert lease.source_tier != "device"
            for name, w in lease.weights.items():
                assert w.is_cuda and torch.allclose(w.cpu(), want[name]), name
