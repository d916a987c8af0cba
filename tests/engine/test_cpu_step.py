"""The CPU step replayed from one C call (coeflow.engine.runners.cpu_replay) computes what the
compiled step computes, is taken where the kernels take the whole model and only there, and
refuses inputs outside its pool without writing anything."""

from __future__ import annotations

import pytest
import torch

from coeflow.engine import Engine, SamplingParams
from coeflow.engine.layers import cpu as cpu_layers
from coeflow.engine.runners import CompiledRunner
from coeflow.engine.runners.cpu_replay import CpuReplayRunner, CpuStep
from coeflow.model import kernels
from checkpoints import make_checkpoint

pytestmark = pytest.mark.slow

needs_layer = pytest.mark.skipif(not (kernels.load() and kernels.has_decoder_layer()),
                                 reason="the CPU kernel's op library is unavailable here "
                                        "(needs x86-64 Linux, AVX-512 BF16, gcc and g++)")

PROMPTS = [[1, 17, 42], [1, 5, 6, 250, 3, 4, 5, 6, 7, 8], [9, 8]]


def _engine_with_blocks(path, dtype: str, prompts: list[list[int]]):
    """A fused engine (the C replay's runner), `prompts` prefilled into its pool, and their block
    tables (4 blocks a row; rows past the prompts are padding, on block 0)."""
    engine = Engine.from_checkpoint(path, dtype=dtype, fused=True)
    assert isinstance(engine.runner, CpuReplayRunner)
    rows = 4 if len(prompts) > 2 else len(prompts)
    seqs = [engine.open(prompt, SamplingParams(max_tokens=64 - len(prompt))) for prompt in prompts]  # 4 blocks
    for seq in seqs:
        engine.prefill(seq)
    return engine, engine.pool.table([seq.blocks for seq in seqs], rows, 4)


@needs_layer
@pytest.mark.parametrize("family,layers", [("llama-gqa", 2), ("qwen2", 2), ("mistral-window", 2),
                                           ("llama3-rope", 2), ("llama-tied", 2), ("llama-gqa", 3)])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("batch", [1, 3])
def test_replay_gives_the_compiled_steps_logits(tmp_path, monkeypatch, family, layers, dtype, batch):
    """Same inputs, same pool: the replay's logits are the compiled step's (the same kernels;
    the final RMSNorm sums in another order, so fp32 may differ in the last bits), and it
    writes the same keys and values. Three layers: the last layer's output in the other of
    the two activation buffers."""
    monkeypatch.setattr(cpu_layers, "KERNEL_ROW_MIN_BYTES", 0)  # the tiny head takes the kernel at one row too
    path = make_checkpoint(tmp_path / "m", family, seed=3, num_hidden_layers=layers)
    engine, blocks = _engine_with_blocks(path, dtype, PROMPTS[:batch])
    pool, b = engine.pool, blocks.shape[0]
    tokens = torch.tensor([[11 + 40 * i] for i in range(b)])
    q_pos = torch.tensor([[14 + i] for i in range(b)])
    with torch.inference_mode():
        replay = CpuStep.build(engine.runner.model, pool, b, blocks.shape[1])
        assert replay is not None, "the kernels take this model: the replay must be built"
        got = replay(tokens, q_pos, blocks).clone()
        written = [t.clone() for t in (*pool.keys(), *pool.values())]
        want = CompiledRunner.step(engine.runner, pool, tokens, q_pos, blocks)  # the compiled step
    assert got.shape == want.shape == (b, engine.cfg.vocab_size) and got.dtype == torch.float32
    if dtype == "bf16":
        assert torch.equal(got, want)
    else:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert all(torch.equal(x, y) for x, y in zip(written, (*pool.keys(), *pool.values())))


@needs_layer
def test_engine_replays_where_the_kernels_take_the_model_with_eagers_tokens(tmp_path):
    """Batch 3 of a llama model (its head takes the kernel at 3 rows): every decode step after
    the bucket's first is replayed, the tokens eager's; o and MLP biases (the layer kernel does
    not take them) keep the compiled graph's own calls; `cpu_replay=False` turns it off."""
    params = SamplingParams(max_tokens=10, ignore_eos=True)
    for family, replays in [("llama-gqa", True), ("llama-bias", False)]:
        path = make_checkpoint(tmp_path / family, family, seed=4)
        want = [c.token_ids for c in Engine.from_checkpoint(path, fused=False).generate(PROMPTS, params)]
        for cpu_replay in (True, False):
            fused = Engine.from_checkpoint(path, fused=True, cpu_replay=cpu_replay)
            for _ in range(2):  # the second batch finds its shape's replay built
                assert [c.token_ids for c in fused.generate(PROMPTS, params)] == want, (family, cpu_replay)
            replayed = getattr(fused.runner, "replayed_steps", 0)
            assert (replayed >= 2 * 9) if replays and cpu_replay else replayed == 0, (family, cpu_replay, replayed)
            if not (replays and cpu_replay):
                assert fused.runner.direct_steps >= 2 * 9 - 2


@needs_layer
def test_sampling_through_the_replay_draws_what_the_compiled_step_draws(tmp_path):
    """Sampled rows (temperature, top-k, top-p, a seed each) take the replay's logits, not its
    greedy choice: the same tokens as the compiled graph's calls, in bf16 where the two give
    equal logits, also beside a greedy row in one batch."""
    path = make_checkpoint(tmp_path / "m", "llama-gqa", seed=6)
    params = [SamplingParams(max_tokens=12, ignore_eos=True, temperature=0.9, top_k=40, top_p=0.95, seed=i)
              for i in range(2)] + [SamplingParams(max_tokens=12, ignore_eos=True)]
    got = {}
    for cpu_replay in (True, False):
        fused = Engine.from_checkpoint(path, dtype="bf16", fused=True, cpu_replay=cpu_replay)
        got[cpu_replay] = [[c.token_ids for c in fused.generate(PROMPTS, params)] for _ in range(2)]
        assert (getattr(fused.runner, "replayed_steps", 0) > 0) == cpu_replay
    assert got[True] == got[False]
    assert got[True][0][0] != got[True][0][1]  # the seeds differ, and so do the draws


@needs_layer
def test_inputs_outside_the_pool_are_refused_and_nothing_is_written(tmp_path):
    path = make_checkpoint(tmp_path / "m", "llama-gqa", seed=3)
    engine, blocks = _engine_with_blocks(path, "fp32", PROMPTS)
    pool, b, vocab = engine.pool, blocks.shape[0], engine.cfg.vocab_size
    reach = blocks.shape[1] * pool.block_size  # positions a table of 4 blocks reaches
    ok_tokens, ok_pos = torch.ones(b, 1, dtype=torch.long), torch.full((b, 1), 20)
    outside = blocks.clone()
    outside[0, 1] = pool.num_blocks
    with torch.inference_mode():
        replay = CpuStep.build(engine.runner.model, pool, b, blocks.shape[1])
        before = [t.clone() for t in (*pool.keys(), *pool.values())]
        for tokens, q_pos, table in [(torch.full((b, 1), vocab), ok_pos, blocks),
                                     (torch.full((b, 1), -1), ok_pos, blocks),
                                     (ok_tokens, torch.full((b, 1), reach), blocks),
                                     (ok_tokens, ok_pos, outside)]:
            with pytest.raises(ValueError, match="out of the pool's range"):
                replay(tokens, q_pos, table)
        with pytest.raises(ValueError, match="int64"):
            replay(ok_tokens.int(), ok_pos, blocks)
        with pytest.raises(ValueError, match="int64"):  # a token short: C would read past it
            replay(ok_tokens[:-1], ok_pos, blocks)
        with pytest.raises(ValueError, match="int64"):  # a table short
            replay(ok_tokens, ok_pos, blocks[:, :2].contiguous())
        with pytest.raises(ValueError, match="positions"):
            replay.greedy(blocks, [1] * b, [20] * (b - 1))
    after = (*pool.keys(), *pool.values())
    assert all(torch.equal(x, y) for x, y in zip(before, after))
