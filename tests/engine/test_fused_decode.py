"""The compiled decode step gives the eager engine's tokens, and a second expert of the same
shape reuses it: a switch never recompiles. (`cpu_replay=False` wherever the compiled step
itself is under test: on a CPU with coeflow's AVX-512 kernels the C replay would take the step.)"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from coeflow.engine import Engine, InvalidRequestError, SamplingParams
from coeflow.engine.layers.cuda import CudaLayers
from coeflow.engine.runners import CompiledRunner
from coeflow.model import ModelConfig, kernels, load_weights
from checkpoints import make_checkpoint

pytestmark = pytest.mark.slow

PROMPTS = [[1, 17, 42, 99, 7], [1, 5, 6, 250, 251, 252, 253]]


def test_second_expert_reuses_compiled_step_and_matches_eager(tmp_path):
    a = make_checkpoint(tmp_path / "a", "llama-gqa", seed=1)
    b = make_checkpoint(tmp_path / "b", "llama-gqa", seed=2)
    params = SamplingParams(max_tokens=12, ignore_eos=True)
    eager = Engine.from_checkpoint(a, fused=False)
    want_a = [c.token_ids for c in eager.generate(PROMPTS, params)]
    eager.load(b)
    want_b = [c.token_ids for c in eager.generate(PROMPTS, params)]
    assert want_a != want_b  # different experts, different answers: the swap is observable

    fused = Engine.from_checkpoint(a, fused=True, cpu_replay=False)
    assert [c.token_ids for c in fused.generate(PROMPTS, params)] == want_a
    graphs = counters["stats"]["unique_graphs"]
    assert fused.fused and graphs >= 1, "the decode step was not compiled"

    fused.load(b)  # a switch: new tensors pointed into the same skeleton
    assert [c.token_ids for c in fused.generate(PROMPTS, params)] == want_b
    cfg = ModelConfig.from_dir(a)
    fused.set_weights(load_weights(a, cfg, torch.float32), name="a again")
    assert [c.token_ids for c in fused.generate(PROMPTS, params)] == want_a
    assert counters["stats"]["unique_graphs"] == graphs, "switching experts recompiled the decode step"


def test_decode_attention_loops_match_sdpa():
    """The compiled CPU step's attention (multiply-reduce + softmax) equals SDPA's, with grouped
    kv heads, empty slots and a sliding window, in fp32 and bf16."""
    import torch.nn.functional as F
    from coeflow.engine.layers.cpu import decode_attention
    g = torch.Generator().manual_seed(0)
    b, h, hkv, s, d = 2, 6, 2, 16, 8
    q, k, v = (torch.randn(b, n, t, d, generator=g) for n, t in ((h, 1), (hkv, s), (hkv, s)))
    slot_pos = torch.arange(s).repeat(b, 1)
    slot_pos[0, 10:] = -1  # row 0 has 10 tokens, row 1 all 16
    q_pos = torch.tensor([[9], [15]])
    kp, qp = slot_pos[:, None, None, :], q_pos[:, None, :, None]
    for mask in ((kp >= 0) & (kp <= qp), (kp >= 0) & (kp <= qp) & (qp - kp < 4)):
        for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
            want = F.scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype), attn_mask=mask,
                                                  enable_gqa=True)
            got = decode_attention(q.to(dtype), k.to(dtype), v.to(dtype), mask)
            assert got.dtype == dtype
            torch.testing.assert_close(got.float(), want.float(), atol=tol, rtol=tol)


def test_weights_laid_out_otherwise_get_their_own_compiled_step(tmp_path, monkeypatch):
    """The compiled step skips Dynamo's guards on the weights; an expert whose tensors have other
    strides (row-padded views, as a pool may hand out) must still get its own tokens, from a
    step compiled for them (with the guard filter too), and going back to the first layout
    must reuse the first step."""
    from coeflow.engine import torch_compat
    filtered = []
    real_filter = torch_compat.skip_guards_on

    def recording(argument):
        keep = real_filter(argument)
        return lambda entries: filtered.append(1) or keep(entries)
    monkeypatch.setattr(torch_compat, "skip_guards_on", recording)
    a = make_checkpoint(tmp_path / "a", "llama-gqa", seed=1)
    params = SamplingParams(max_tokens=8, ignore_eos=True)
    want = [c.token_ids for c in Engine.from_checkpoint(a, fused=False).generate(PROMPTS, params)]
    fused = Engine.from_checkpoint(a, fused=True, cpu_replay=False)
    assert [c.token_ids for c in fused.generate(PROMPTS, params)] == want
    first = len(filtered)
    assert first > 0, "the compiled step was not given the guard filter"
    padded = {}
    for name, t in load_weights(a, ModelConfig.from_dir(a), torch.float32).items():
        if t.dim() == 2:
            room = torch.zeros(t.shape[0], t.shape[1] + 16)
            room[:, :t.shape[1]] = t
            t = room[:, :t.shape[1]]  # same values, rows 16 elements apart
        padded[name] = t
    fused.set_weights(padded, name="a, padded")
    assert [c.token_ids for c in fused.generate(PROMPTS, params)] == want
    assert fused.fused, "the engine fell back to eager instead of compiling for the new layout"
    assert len(filtered) > first, "the step compiled for the new layout lost the guard filter"
    graphs = counters["stats"]["unique_graphs"]
    fused.load(a)  # back to the first layout
    assert [c.token_ids for c in fused.generate(PROMPTS, params)] == want
    assert counters["stats"]["unique_graphs"] == graphs, "returning to a known layout recompiled"


@pytest.mark.parametrize("cpu_replay", [False, True])
def test_one_engine_serves_every_batch_and_length_bucket(tmp_path, cpu_replay):
    """Each (batch, block table width) bucket is its own compiled variant (or C replay): requests
    that change buckets back and forth on one engine get the eager engine's tokens (the guards
    that tell the buckets apart are kept when the skeleton's are skipped)."""
    path = make_checkpoint(tmp_path / "a", "llama-gqa", seed=3)
    eager = Engine.from_checkpoint(path, fused=False)
    fused = Engine.from_checkpoint(path, fused=True, cpu_replay=cpu_replay)
    runs = [([PROMPTS[0]], 6), ([PROMPTS[0]], 140), (PROMPTS, 6), ([PROMPTS[1]], 6), (PROMPTS, 130),
            ([PROMPTS[0]], 6)]  # table widths 8 and 16, batch buckets 1 and 2
    for prompts, n in runs:
        params = SamplingParams(max_tokens=n, ignore_eos=True)
        want = [c.token_ids for c in eager.generate(prompts, params)]
        assert [c.token_ids for c in fused.generate(prompts, params)] == want, (len(prompts), n)
    assert fused.fused


def test_a_sequence_takes_the_blocks_it_needs_and_gives_them_back(tmp_path):
    """The KV pool is paged: a batch takes blocks for each sequence's own length (not the
    longest's), gives them all back when it ends (run through, stopped early or failed), and a
    batch the pool cannot hold is refused with nothing taken."""
    from coeflow.engine.paged import BLOCK_SIZE, KVPool
    path = make_checkpoint(tmp_path / "a", "llama-gqa", seed=3)
    cfg = ModelConfig.from_dir(path)
    engine = Engine.from_checkpoint(path, fused=False, kv_cache_budget=40 * KVPool.bytes_per_block(cfg, torch.float32))
    free = engine.pool.free_blocks
    assert free == 39  # block 0 is padding's
    short, long = [1, 2, 3], list(range(1, 200))
    taken = []
    for deltas in engine.stream([short, long], SamplingParams(max_tokens=10, ignore_eos=True)):
        taken.append(free - engine.pool.free_blocks)
    assert taken[0] == -(-(3 + 10) // BLOCK_SIZE) + -(-(199 + 10) // BLOCK_SIZE)
    assert engine.pool.free_blocks == free
    stream = engine.stream([short], SamplingParams(max_tokens=50, ignore_eos=True))
    next(stream)
    stream.close()  # a client that went away
    assert engine.pool.free_blocks == free
    with pytest.raises(InvalidRequestError, match="KV cache has room"):  # 3 x 14 blocks
        engine.generate([long] * 3, SamplingParams(max_tokens=10, ignore_eos=True))
    assert engine.pool.free_blocks == free


def test_sequences_of_very_unequal_lengths_get_their_own_tokens(tmp_path):
    """Rows of one batch at positions far apart (one reaching past several blocks): each row
    attends to its own blocks only, and gets the tokens it gets alone."""
    path = make_checkpoint(tmp_path / "a", "mistral-window", seed=4)
    engine = Engine.from_checkpoint(path, fused=False)
    fused = Engine.from_checkpoint(path, fused=True)
    prompts = [[1, 2], list(range(3, 90)), [7] * 40]
    params = SamplingParams(max_tokens=20, ignore_eos=True)
    alone = [engine.generate([p], params)[0].token_ids for p in prompts]
    assert [c.token_ids for c in engine.generate(prompts, params)] == alone
    assert [c.token_ids for c in fused.generate(prompts, params)] == alone


def test_compiled_step_with_joined_products_switches_between_joined_and_separate_weights(
        tmp_path, monkeypatch):
    """Where products are joined (the GPU's layers, run here on the CPU), experts whose groups lie
    back to back and experts whose do not alternate on one engine: each gets its own tokens,
    from a step compiled for its kind (kept)."""
    a = make_checkpoint(tmp_path / "a", "llama-bias", seed=1)
    b = make_checkpoint(tmp_path / "b", "llama-bias", seed=2)
    cfg = ModelConfig.from_dir(a)
    joined = {k: load_weights(p, cfg, torch.float32) for k, p in (("a", a), ("b", b))}
    separate = {k: {n: t.clone() for n, t in w.items()} for k, w in joined.items()}  # apart
    params = SamplingParams(max_tokens=8, ignore_eos=True)
    eager = Engine(cfg, fused=False)
    want = {}
    for k, w in joined.items():
        eager.set_weights(w)
        want[k] = [c.token_ids for c in eager.generate(PROMPTS, params)]
    assert want["a"] != want["b"]
    fused = Engine(cfg, runner=lambda m: CompiledRunner(m, CudaLayers(gemv=False)))
    for k, kind in (("a", separate), ("b", joined), ("a", joined), ("b", separate), ("a", joined)):
        fused.set_weights(kind[k], name=k)
        assert (fused.runner.model.model.layers[0].mlp.joined_weight is not None) == (kind is joined)
        assert [c.token_ids for c in fused.generate(PROMPTS, params)] == want[k], k
    assert fused.fused and len(fused.runner._steps) == 2


def test_a_batch_on_the_expert_already_attached_attaches_nothing(tmp_path, monkeypatch):
    """The server hands the engine its expert's weights before every batch; when they are
    the tensors attached already, nothing is redone, and other tensors are still attached."""
    import coeflow.engine.engine as engine_module
    a = make_checkpoint(tmp_path / "a", "llama-gqa", seed=1)
    b = make_checkpoint(tmp_path / "b", "llama-gqa", seed=2)
    cfg = ModelConfig.from_dir(a)
    wa, wb = (load_weights(p, cfg, torch.float32) for p in (a, b))
    params = SamplingParams(max_tokens=6, ignore_eos=True)
    engine = Engine(cfg, fused=False)
    engine.set_weights(wa, name="a")
    want_a = [c.token_ids for c in engine.generate(PROMPTS, params)]
    attached = []
    attach = engine_module.attach_weights
    monkeypatch.setattr(engine_module, "attach_weights", lambda m, w: attached.append(1) or attach(m, w))
    engine.set_weights(dict(wa), name="a again")  # a new dict of the same tensors, as a lease gives
    assert attached == [] and engine.loaded == "a again"
    engine.set_weights(wb, name="b")
    assert attached == [1]
    assert [c.token_ids for c in engine.generate(PROMPTS, params)] != want_a
    engine.set_weights(wa, name="a")
    assert [c.token_ids for c in engine.generate(PROMPTS, params)] == want_a


def _steps_without_dynamo(runner) -> int:
    return runner.direct_steps + getattr(runner, "replayed_steps", 0)


@pytest.mark.parametrize("cpu_replay", [False, True])
def test_cpu_steps_after_a_buckets_first_call_the_compiled_graph_without_dynamo(tmp_path, cpu_replay):
    """On the CPU the compiled step is called without Dynamo once a batch shape's first step has
    picked its graph, or, with `cpu_replay` where the kernels take the model, replayed from C.
    What Dynamo's guards would have checked must still hold: a switch of experts, of batch
    bucket and of table width each give the eager tokens."""
    a = make_checkpoint(tmp_path / "a", "llama-gqa", seed=1)
    b = make_checkpoint(tmp_path / "b", "llama-gqa", seed=2)
    eager = Engine.from_checkpoint(a, fused=False)
    fused = Engine.from_checkpoint(a, fused=True, cpu_replay=cpu_replay)
    runs = [("a", PROMPTS, 8), ("b", PROMPTS, 8), ("b", [PROMPTS[0]], 8), ("a", [PROMPTS[1]], 140),
            ("a", PROMPTS, 8)]
    for name, prompts, n in runs:
        path = {"a": a, "b": b}[name]
        eager.load(path)
        fused.load(path)
        params = SamplingParams(max_tokens=n, ignore_eos=True)
        before = _steps_without_dynamo(fused.runner)
        want = [c.token_ids for c in eager.generate(prompts, params)]
        assert [c.token_ids for c in fused.generate(prompts, params)] == want, (name, len(prompts), n)
        assert _steps_without_dynamo(fused.runner) >= before + n - 2, "decode steps went through Dynamo"
    assert fused.fused
    replays = cpu_replay and kernels.load() and kernels.has_decoder_layer()
    assert (getattr(fused.runner, "replayed_steps", 0) > 0) == replays


def test_cpu_step_stays_with_dynamo_when_its_inputs_cannot_be_found(tmp_path, monkeypatch):
    """If the sources of a compiled graph's inputs cannot be found among the step's arguments
    (another torch's internals), the step keeps going through Dynamo: same tokens, no error."""
    from coeflow.engine import torch_compat
    monkeypatch.setattr(torch_compat.GraphRecorder, "_sources", lambda self, example_inputs: None)
    a = make_checkpoint(tmp_path / "a", "llama-gqa", seed=1)
    params = SamplingParams(max_tokens=8, ignore_eos=True)
    want = [c.token_ids for c in Engine.from_checkpoint(a, fused=False).generate(PROMPTS, params)]
    fused = Engine.from_checkpoint(a, fused=True, cpu_replay=False)
    assert [c.token_ids for c in fused.generate(PROMPTS, params)] == want
    assert fused.fused and fused.runner.direct_steps == 0


def test_a_failing_compiled_step_goes_on_eagerly_with_the_models_own_layers(tmp_path, monkeypatch):
    """A compiler that fails (no C++ compiler, an op it cannot compile) must not stop
    generation: the step goes on eagerly, on the model's own modules, not on the device's
    layers written for a compiler to fuse (run eagerly, they copy whole weights a product)."""
    from coeflow.engine.layers.cpu import StreamedLinear

    def broken(self, *args):
        raise RuntimeError("compiler failed (test)")
    monkeypatch.setattr(CompiledRunner, "_compiled_step", broken)
    streamed = []
    forward = StreamedLinear.forward
    monkeypatch.setattr(StreamedLinear, "forward", lambda self, x: streamed.append(1) or forward(self, x))
    path = make_checkpoint(tmp_path / "a", "llama-gqa", seed=5)
    params = SamplingParams(max_tokens=8, ignore_eos=True)
    want = [c.token_ids for c in Engine.from_checkpoint(path, fused=False).generate(PROMPTS, params)]
    engine = Engine.from_checkpoint(path, fused=True, cpu_kernel=False)
    assert engine.fused
    assert [c.token_ids for c in engine.generate(PROMPTS, params)] == want
    assert not engine.fused and streamed == []
