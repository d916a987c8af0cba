"""The sampler's adjustments and picks on logits worked out by hand: transformers' repetition
penalty, OpenAI's presence and frequency penalties and logit biases, min_p, and the picked
token's log-probabilities under the model's own distribution; draws in the proportions of
probabilities given by hand."""

from __future__ import annotations

import math

import pytest
import torch

from coeflow.engine import InvalidRequestError, SamplingParams
from coeflow.engine.sampling import adjust, pick, sample


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits_of_seen_tokens():
    logits = torch.tensor([1.0, 2.0, -1.0, 0.5])
    got = adjust(logits, SamplingParams(repetition_penalty=2.0), prompt=[1], generated=[2])
    assert got.tolist() == [1.0, 1.0, -2.0, 0.5]


def test_presence_and_frequency_penalties_count_the_output_only_and_biases_add():
    logits = torch.tensor([1.0, 2.0, -1.0, 0.5])
    params = SamplingParams(presence_penalty=0.5, frequency_penalty=0.25, logit_bias=((2, 3.0),))
    got = adjust(logits, params, prompt=[1, 1], generated=[0, 0, 3])
    assert got.tolist() == pytest.approx([1.0 - 2 * 0.25 - 0.5, 2.0, -1.0 + 3.0, 0.5 - 0.25 - 0.5])


def test_a_bias_decides_a_greedy_pick_and_the_logprobs_are_the_models_own():
    logits = torch.tensor([0.0, math.log(3.0), -50.0])  # probabilities 1/4, 3/4 and ~0
    plain = pick(logits, SamplingParams(logprobs=2), None)
    assert plain.token == 1 and plain.logprob == pytest.approx(math.log(0.75))
    assert [t for t, _ in plain.top] == [1, 0] and plain.top[1][1] == pytest.approx(math.log(0.25))
    biased = pick(logits, SamplingParams(logit_bias=((0, 5.0),), logprobs=0), None)
    assert biased.token == 0 and biased.logprob == pytest.approx(math.log(0.25)) and biased.top == ()


def test_min_p_drops_tokens_less_likely_than_its_share_of_the_likeliest():
    logits = torch.log(torch.tensor([0.6, 0.35, 0.05]))
    params = SamplingParams(temperature=1.0, min_p=0.5)  # keeps p >= 0.3
    seen = {pick(logits, params, torch.Generator().manual_seed(seed)).token for seed in range(300)}
    assert seen == {0, 1}


def test_plain_greedy_is_only_an_argmax_with_nothing_to_adjust_or_report():
    assert SamplingParams().plain
    assert not SamplingParams(frequency_penalty=0.1).plain and not SamplingParams(logprobs=0).plain
    assert not SamplingParams(temperature=0.7).plain


@pytest.mark.parametrize("field,value", [("presence_penalty", 2.5), ("frequency_penalty", -3.0),
                                         ("repetition_penalty", 0.0), ("min_p", 1.5), ("logprobs", 21)])
def test_out_of_range_values_are_refused_naming_the_field(field, value):
    with pytest.raises(InvalidRequestError, match=field):
        SamplingParams(**{field: value})


def test_sampling_draws_each_token_as_often_as_its_probability_and_never_an_impossible_one():
    probs = torch.tensor([0.5, 0.3, 0.2, 0.0, 0.0])
    logits = torch.log(probs)  # -inf for the impossible ones
    params = SamplingParams(temperature=1.0, seed=123)
    g = params.generator()
    counts = torch.bincount(torch.tensor([sample(logits, params, g) for _ in range(20000)]), minlength=5)
    assert counts[3] == counts[4] == 0
    assert torch.allclose(counts[:3] / 20000, probs[:3], atol=0.02)
    # top_k 2 keeps the two likeliest, in their own proportion (0.5 : 0.3)
    top2 = SamplingParams(temperature=1.0, top_k=2, seed=5)
    g = top2.generator()
    counts = torch.bincount(torch.tensor([sample(logits, top2, g) for _ in range(20000)]), minlength=5)
    assert counts[2:].sum() == 0 and abs(counts[0] / 20000 - 0.625) < 0.02


def test_a_seed_repeats_its_draws():
    logits = torch.randn(100)
    g1, g2 = SamplingParams(temperature=1.0, seed=7).generator(), SamplingParams(temperature=1.0, seed=7).generator()
    params = SamplingParams(temperature=1.0, seed=7)
    assert [sample(logits, params, g1) for _ in range(50)] == [sample(logits, params, g2) for _ in range(50)]
