"""Continuous batching through the engine's sequence interface (open, prefill, decode, close):
sequences join a running batch between steps (their prompts prefilled in chunks while the
others decode), leave it when they finish or are cancelled, and each gets the greedy tokens
it gets alone, whatever it was batched with."""

from __future__ import annotations

import pytest

from coeflow.engine import Engine, SamplingParams
from checkpoints import make_checkpoint

pytestmark = pytest.mark.slow

PROMPTS = [[1, 17, 42, 99, 7], list(range(3, 60)), [1, 5, 6, 250, 251, 252, 253], [9] * 30, [1, 2]]
LENGTHS = [40, 12, 25, 30, 18]


def _alone(engine: Engine, i: int) -> list[int]:
    return engine.generate([PROMPTS[i]], SamplingParams(max_tokens=LENGTHS[i], ignore_eos=True))[0].token_ids


def _continuous(engine: Engine, chunk: int, cancel: tuple[int, ...] = ()) -> dict[int, list[int]]:
    """A scheduler's life in small: sequence 0 starts alone; one more joins every 4 steps, its
    prompt prefilled `chunk` tokens a step while the others decode; a finished one leaves at
    once; the sequences in `cancel` are cancelled 5 steps after they join. Returns each sequence's tokens."""
    live, waiting, out = [], list(range(len(PROMPTS))), {}
    joined: dict[int, int] = {}
    step = 0
    while waiting or live:
        if waiting and step % 4 == 0:
            i = waiting.pop(0)
            live.append(engine.open(PROMPTS[i], SamplingParams(max_tokens=LENGTHS[i], ignore_eos=True), index=i))
            joined[i] = step
        for s in [s for s in live if s.prefilled < len(s.prompt)]:
            engine.prefill(s, chunk)
        decoding = [s for s in live if s.decoding]
        if decoding:
            steps = engine.decode(decoding, 100)
            next(steps)
            steps.close()
        for s in live:
            if s.index in cancel and step - joined[s.index] == 5:
                s.cancel()
        for s in [s for s in live if s.done]:
            out[s.index] = list(s.completion.token_ids)
            engine.close(s)
            live.remove(s)
        step += 1
    return out


@pytest.mark.parametrize("dtype,fused", [("fp32", True), ("bf16", False)])
@pytest.mark.parametrize("family", ["llama-gqa", "mistral-window", "qwen2"])
def test_sequences_joining_and_leaving_get_their_tokens_alone(tmp_path, family, dtype, fused):
    """bf16 on the eager step: the compiled bf16 step on a CPU without coeflow's kernels sums a
    row's products in an order that depends on the batch's size (Inductor vectorises each shape
    its own way), so there a row's tokens may part from its tokens alone after some steps,
    batched continuously or not."""
    path = make_checkpoint(tmp_path / "a", family, seed=5)
    engine = Engine.from_checkpoint(path, fused=fused, dtype=dtype)
    alone = [_alone(engine, i) for i in range(len(PROMPTS))]
    free = engine.pool.free_blocks
    got = _continuous(engine, chunk=16)
    assert [got[i] for i in range(len(PROMPTS))] == alone
    assert engine.pool.free_blocks == free


def test_cancelled_sequences_leave_and_the_others_go_on(tmp_path):
    """One sequence is cancelled halfway through its prompt's prefill, one while decoding:
    both leave at once with their blocks given back, and the others' tokens are unchanged."""
    path = make_checkpoint(tmp_path / "a", "llama-gqa", seed=6)
    engine = Engine.from_checkpoint(path, fused=True)
    alone = [_alone(engine, i) for i in range(len(PROMPTS))]
    free = engine.pool.free_blocks
    got = _continuous(engine, chunk=7, cancel=(1, 2))
    assert got[1] == []  # 57 prompt tokens, 7 a step: still prefilling
    assert got[2] == alone[2][:len(got[2])] and 0 < len(got[2]) < LENGTHS[2]
    assert [got[i] for i in (0, 3, 4)] == [alone[i] for i in (0, 3, 4)]
    assert engine.pool.free_blocks == free


def test_two_experts_keep_their_sequences_while_the_other_runs(tmp_path):
    """Two experts of one shape share the engine and its pool: each one's sequences wait, their
    keys in their blocks, while the other's decode, and go on with their own weights."""
    from coeflow.model import load_weights
    a, b = (make_checkpoint(tmp_path / n, "llama-gqa", seed=s) for n, s in (("a", 7), ("b", 8)))
    engine = Engine.from_checkpoint(a, fused=True)
    wa, wb = (load_weights(p, engine.cfg, engine.dtype, engine.device) for p in (a, b))
    params = SamplingParams(max_tokens=24, ignore_eos=True)
    want = {}
    for name, w in (("a", wa), ("b", wb)):
        engine.set_weights(w, name)
        want[name] = [c.token_ids for c in engine.generate(PROMPTS[:2], params)]
    seqs = {}
    for name, w in (("a", wa), ("b", wb)):
        engine.set_weights(w, name)
        seqs[name] = [engine.open(p, params, index=i) for i, p in enumerate(PROMPTS[:2])]
        for s in seqs[name]:
            engine.prefill(s)
    while any(not s.done for ss in seqs.values() for s in ss):
        for name, w in (("a", wa), ("b", wb)):  # three steps each, in turn
            engine.set_weights(w, name)
            live = [s for s in seqs[name] if not s.done]
            if live:
                for _ in engine.decode(live, 3):
                    pass
    assert {n: [s.completion.token_ids for s in ss] for n, ss in seqs.items()} == want


def test_a_shared_prefix_is_prefilled_once_and_gives_the_tokens_of_a_full_prefill(tmp_path):
    """Prompts that open with the same 40 tokens: the second takes the first's two whole
    blocks from the prefix cache (its 8 remaining tokens prefilled), and both get the tokens
    they get with a cold cache. Another expert's key finds nothing; an unused cached block is
    counted free and taken back when the pool needs it."""
    path = make_checkpoint(tmp_path / "a", "llama-gqa", seed=9)
    engine = Engine.from_checkpoint(path, fused=True)
    system = [1] + list(range(100, 139))  # 40 tokens: 2 whole blocks and 8 tokens of a third
    prompts = [system + [5, 6, 7], system + [8, 9, 10, 11]]
    params = SamplingParams(max_tokens=12, ignore_eos=True)
    cold = [engine.generate([p], params)[0].token_ids for p in prompts]
    free = engine.pool.free_blocks
    first = engine.open(prompts[0], params, prefix="a")
    assert first.prefilled == 0
    engine.prefill(first)
    second = engine.open(prompts[1], params, prefix="a")
    assert second.prefilled == 32 and second.blocks[:2] == first.blocks[:2]
    other = engine.open(prompts[1], params, prefix="b")
    assert other.prefilled == 0
    engine.close(other)
    engine.prefill(second)
    for s in (first, second):
        for _ in engine.decode([s], params.max_tokens):
            pass
    assert [first.completion.token_ids, second.completion.token_ids] == cold
    engine.close(first)
    engine.close(second)
    assert engine.pool.free_blocks == free and engine.pool.cached_blocks == 2
    again = engine.open(prompts[0], params, prefix="a")  # the cache outlives the sequences
    assert again.prefilled == 32
    engine.close(again)
    everything = engine.pool.allocate(engine.pool.free_blocks)  # the cached blocks are taken back
    assert engine.pool.cached_blocks == 0
    engine.pool.release(everything)
    assert engine.open(prompts[0], params, prefix="a").prefilled == 0


def test_sequences_of_one_prompt_opened_together_prefill_it_once(tmp_path):
    """n choices of a prompt open before any prefills: the first's whole blocks, once
    prefilled, replace the others' own (which go back to the pool), so the others prefill only
    the last part; every choice gets the tokens of a cold prefill."""
    path = make_checkpoint(tmp_path / "a", "llama-gqa", seed=9)
    engine = Engine.from_checkpoint(path, fused=False)
    prompt = [1] + list(range(100, 139))  # 40 tokens: 2 whole blocks and 8 tokens of a third
    params = SamplingParams(max_tokens=10, ignore_eos=True)
    cold = engine.generate([prompt], params)[0].token_ids
    free = engine.pool.free_blocks
    seqs = [engine.open(prompt, params, prefix="a", index=i) for i in range(3)]
    assert all(s.prefilled == 0 for s in seqs)
    held = free - engine.pool.free_blocks
    reused_before = engine.reused_tokens
    for s in seqs:
        engine.prefill(s)
    assert [s.reused for s in seqs] == [0, 2, 2] and engine.reused_tokens - reused_before == 2 * 32
    assert seqs[1].blocks[:2] == seqs[2].blocks[:2] == seqs[0].blocks[:2]
    assert free - engine.pool.free_blocks == held - 4  # the two others' own first blocks went back
    for _ in engine.decode(seqs, params.max_tokens):
        pass
    assert [s.completion.token_ids for s in seqs] == [cold] * 3
    for s in seqs:
        engine.close(s)
    assert engine.pool.free_blocks == free
