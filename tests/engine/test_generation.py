"""Sampling, stop conditions, streaming and the chat template, as a user of `generate` sees them."""

from __future__ import annotations

import pytest

from coeflow.engine import Engine, InvalidRequestError, SamplingParams
from coeflow.model import Tokenizer
from checkpoints import make_checkpoint


@pytest.fixture(scope="module")
def engine(checkpoints):
    return Engine.from_checkpoint(checkpoints["llama-gqa"], fused=False)


@pytest.fixture(scope="module")
def tok(checkpoints):
    return Tokenizer.from_dir(checkpoints["llama-gqa"])


PROMPT = [1, 40, 41, 42, 43]


def test_seed_makes_sampling_reproducible(engine):
    p = SamplingParams(max_tokens=24, temperature=1.5, seed=7, ignore_eos=True)
    a = engine.generate([PROMPT], p)[0].token_ids
    assert engine.generate([PROMPT], p)[0].token_ids == a
    others = {tuple(engine.generate([PROMPT], SamplingParams(max_tokens=24, temperature=1.5, seed=s,
                                                              ignore_eos=True))[0].token_ids)
              for s in range(8, 12)}
    assert len(others | {tuple(a)}) > 1  # seeds matter: sampling is not secretly greedy


def test_top_k_one_is_greedy(engine):
    greedy = engine.generate([PROMPT], SamplingParams(max_tokens=16, ignore_eos=True))[0].token_ids
    topk1 = engine.generate([PROMPT], SamplingParams(max_tokens=16, temperature=2.0, top_k=1, seed=3,
                                                     ignore_eos=True))[0].token_ids
    tiny_p = engine.generate([PROMPT], SamplingParams(max_tokens=16, temperature=2.0, top_p=1e-6, seed=3,
                                                      ignore_eos=True))[0].token_ids
    assert topk1 == greedy == tiny_p


def test_eos_stops_generation(engine):
    greedy = engine.generate([PROMPT], SamplingParams(max_tokens=10, ignore_eos=True))[0].token_ids
    eos = greedy[3]
    c = engine.generate([PROMPT], SamplingParams(max_tokens=10), eos_ids={eos})[0]
    assert c.token_ids == greedy[:greedy.index(eos)]
    assert c.finish_reason == "stop"


def test_stop_string_truncates_text_and_stream_agrees(engine, tok):
    ids = tok.encode("select name from")
    full = engine.generate([ids], SamplingParams(max_tokens=30, ignore_eos=True), detokenize=tok.decode)[0]
    assert len(full.text) > 6
    stop = full.text[3:6]
    params = SamplingParams(max_tokens=30, stop=(stop,), ignore_eos=True)
    c = engine.generate([ids], params, detokenize=tok.decode)[0]
    assert c.finish_reason == "stop"
    assert c.text == full.text[:full.text.index(stop)]
    streamed = "".join(d.text for step in engine.stream([ids], params, detokenize=tok.decode) for d in step)
    assert streamed == c.text


def test_stream_concatenates_to_final_text(engine, tok):
    ids = tok.encode("the quick")
    params = SamplingParams(max_tokens=20, ignore_eos=True)
    final = engine.generate([ids], params, detokenize=tok.decode)[0]
    steps = list(engine.stream([ids], params, detokenize=tok.decode))
    assert "".join(d.text for s in steps for d in s) == final.text
    assert [d.token_id for s in steps for d in s] == final.token_ids
    assert steps[-1][0].finish_reason == "length"


def test_chat_template_from_tokenizer_config(tok):
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}])
    assert text == "<s><|user|>hi</s><|assistant|>"
    assert tok.encode_chat([{"role": "user", "content": "hi"}])[0] == 1  # one BOS, from the template
    assert tok.encode_chat([{"role": "user", "content": "hi"}]).count(1) == 1


def test_plain_chat_fallback_without_template(checkpoints, tmp_path):
    import shutil
    d = tmp_path / "t"
    d.mkdir()
    shutil.copy(checkpoints["llama"] / "tokenizer.json", d)
    tok = Tokenizer.from_dir(d)
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}]) == "user: hi\nassistant:"


@pytest.mark.parametrize("kwargs", [dict(max_tokens=0), dict(temperature=-1.0), dict(top_p=0.0),
                                    dict(top_k=-2), dict(stop=("",))])
def test_invalid_sampling_params_are_refused(kwargs):
    with pytest.raises(InvalidRequestError):
        SamplingParams(**kwargs)


def test_context_overflow_and_bad_tokens_are_refused(engine):
    with pytest.raises(InvalidRequestError, match="context"):
        engine.generate([PROMPT], SamplingParams(max_tokens=10_000))
    with pytest.raises(InvalidRequestError, match="out of range"):
        engine.generate([[1, 10_000]], SamplingParams(max_tokens=2))
    with pytest.raises(InvalidRequestError, match="empty"):
        engine.generate([[]], SamplingParams(max_tokens=2))


def test_running_a_step_ahead_gives_the_same_tokens_and_stops(tmp_path):
    """On a GPU, greedy decoding chooses tokens on the device and queues the next step before
    the host reads this one's (runners.cuda_graphs.RunAhead). Run here around the eager and the
    compiled runners: the same tokens as without, for batch buckets 1, 2 and 4, and EOS and
    max_tokens still end each sequence where they should (a step computed past the end is
    dropped)."""
    from coeflow.engine.layers.cpu import CpuLayers
    from coeflow.engine.runners import CompiledRunner, EagerRunner
    from coeflow.engine.runners.cuda_graphs import RunAhead
    path = make_checkpoint(tmp_path / "a", "llama-gqa", seed=4)
    prompts = [[1, 17, 42, 99, 7], [1, 5, 6, 250, 251, 252, 253], [1, 9]]
    plain = Engine.from_checkpoint(path, fused=False)
    for inner in (EagerRunner, lambda m: CompiledRunner(m, CpuLayers(kernels=False))):
        ahead = Engine.from_checkpoint(path, runner=lambda m: RunAhead(inner(m)))
        for n, max_tokens in ((1, 12), (3, 9), (2, 2)):
            params = [SamplingParams(max_tokens=max_tokens - i, ignore_eos=True) for i in range(n)]
            want = plain.generate(prompts[:n], params)
            got = ahead.generate(prompts[:n], params)
            assert [c.token_ids for c in got] == [c.token_ids for c in want], n
            assert [len(c.token_ids) for c in got] == [max_tokens - i for i in range(n)]
        full = ahead.generate(prompts[:1], SamplingParams(max_tokens=12, ignore_eos=True))[0].token_ids
        eos = full[3]  # stop the sequence at its fourth token
        stopped = ahead.generate(prompts[:1], SamplingParams(max_tokens=12), eos_ids={eos})[0]
        assert stopped.token_ids == full[:full.index(eos)] and stopped.finish_reason == "stop"


def test_a_sequence_that_fails_ends_alone_and_the_batch_goes_on(engine, monkeypatch):
    """One sequence's failure (here its sampling raises, as it would on logits that are not
    numbers) ends that sequence with finish_reason "error" and says why; every other sequence
    of the batch gets the tokens it gets alone."""
    import coeflow.engine.engine as engine_module
    hostile = SamplingParams(max_tokens=10, temperature=0.77, seed=1, ignore_eos=True)
    real = engine_module.pick

    def pick(logits, params, generator, *history):
        if params is hostile:
            raise RuntimeError("probability tensor contains either inf, nan or element < 0")
        return real(logits, params, generator, *history)
    monkeypatch.setattr(engine_module, "pick", pick)
    prompts = [PROMPT, [1, 9, 8, 7], [1, 50, 51]]
    others = [SamplingParams(max_tokens=10, temperature=1.2, seed=5, ignore_eos=True),
              SamplingParams(max_tokens=6, ignore_eos=True)]
    alone = [engine.generate([p], q)[0].token_ids for p, q in zip(prompts[1:], others)]
    got = engine.generate(prompts, [hostile, *others])
    assert got[0].finish_reason == "error" and "inf, nan" in got[0].error and got[0].token_ids == []
    assert [c.token_ids for c in got[1:]] == alone
    assert [c.finish_reason for c in got[1:]] == ["length", "length"]
    steps = list(engine.stream(prompts, [hostile, *others]))
    assert [d for d in steps[0] if d.index == 0][0].finish_reason == "error"
    assert all(d.index != 0 for s in steps[1:] for d in s), "the failed sequence went on"


def test_seeds_outside_torchs_range_are_refused_by_name():
    with pytest.raises(InvalidRequestError, match="seed"):
        SamplingParams(temperature=1.0, seed=2**64)
    with pytest.raises(InvalidRequestError, match="seed"):
        SamplingParams(temperature=1.0, seed=-(2**63) - 1)
    assert SamplingParams(temperature=1.0, seed=2**64 - 1).generator() is not None


def test_greedy_and_sampled_rows_in_one_batch_each_get_what_they_get_alone(engine):
    """A sampled row sends the batch off the greedy path: the greedy rows' tokens must not
    change for it, nor the sampled row's for being batched."""
    greedy = SamplingParams(max_tokens=12, ignore_eos=True)
    sampled = SamplingParams(max_tokens=12, temperature=1.3, seed=11, ignore_eos=True)
    prompts = [PROMPT, [1, 50, 51], [1, 60, 61, 62], PROMPT]
    params = [greedy, sampled, greedy, sampled]
    alone = [engine.generate([p], q)[0].token_ids for p, q in zip(prompts, params)]
    together = [c.token_ids for c in engine.generate(prompts, params)]
    assert together == alone
