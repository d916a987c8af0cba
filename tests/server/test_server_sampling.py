"""Sampling and output parameters through the official client: logprobs in chat's and
completions' shapes (streamed too), penalties and logit biases that change the answer, and
bad values refused by name."""

from __future__ import annotations

import math

import openai
import pytest

USER = [{"role": "user", "content": "list the files"}]


def test_chat_logprobs_list_each_token_with_its_likeliest_alternatives(client):
    r = client.chat.completions.create(model="sql", messages=USER, max_tokens=6, temperature=0, logprobs=True,
                                       top_logprobs=3, extra_body={"ignore_eos": True})
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens == 6
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        assert sum(math.exp(t.logprob) for t in entry.top_logprobs) <= 1 + 1e-6
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)  # greedy: the likeliest
        assert entry.top_logprobs[0].token == entry.token and bytes(entry.bytes).decode() == entry.token


def test_completion_logprobs_stream_and_whole_agree(client):
    kw = dict(model="sql", prompt="select", max_tokens=5, temperature=0, logprobs=2, extra_body={"ignore_eos": True})
    whole = client.completions.create(**kw).choices[0]
    lp = whole.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 5
    assert "".join(lp.tokens) == whole.text and lp.text_offset == sorted(lp.text_offset)
    assert all(len(top) <= 2 for top in lp.top_logprobs)
    streamed = [c.choices[0].logprobs for c in client.completions.create(**kw, stream=True)
                if c.choices and c.choices[0].logprobs]
    assert [t for part in streamed for t in part.token_logprobs] == pytest.approx(lp.token_logprobs)


def test_a_logit_bias_forces_a_token_and_a_frequency_penalty_wears_it_down(client):
    forced = client.completions.create(model="sql", prompt="select", max_tokens=40, temperature=0,
                                       logit_bias={"7": 30}, logprobs=0, extra_body={"ignore_eos": True})
    tokens = forced.choices[0].logprobs.tokens
    assert len(set(tokens)) == 1 and len(tokens) == 40
    worn = client.completions.create(model="sql", prompt="select", max_tokens=40, temperature=0,
                                     logit_bias={"7": 30}, frequency_penalty=2.0, presence_penalty=2.0,
                                     logprobs=0, extra_body={"ignore_eos": True})
    assert len(set(worn.choices[0].logprobs.tokens)) > 1  # 2 a repeat (and 2 once): some 15 repeats outweigh the bias


@pytest.mark.parametrize("kw,param", [
    (dict(presence_penalty=3.0), "presence_penalty"),
    (dict(logit_bias={"12": 500}), "logit_bias"),
    (dict(logit_bias={"99999999": 1}), "logit_bias"),
    (dict(top_logprobs=2), "top_logprobs"),
    (dict(logprobs=True, top_logprobs=25), "top_logprobs"),
    (dict(extra_body={"min_p": 2}), "min_p"),
])
def test_bad_sampling_values_are_refused_by_name(client, kw, param):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="sql", messages=USER, max_tokens=2, **kw)
    assert e.value.body["param"] == param


def test_a_prompt_of_token_ids_is_the_same_prompt_as_its_text(live, client):
    srv, _ = live
    ids = srv.runtimes["sql"].tokenizer.encode("select name from")
    kw = dict(model="sql", max_tokens=6, temperature=0, extra_body={"ignore_eos": True})
    by_text = client.completions.create(prompt="select name from", **kw)
    by_ids = client.completions.create(prompt=ids, **kw)
    assert by_ids.choices[0].text == by_text.choices[0].text and by_ids.usage.prompt_tokens == len(ids)
    for bad_prompt, needle in (([ids, ids], "one prompt"), ([10**9], "vocabulary"), ([-1], "negative")):
        with pytest.raises(openai.BadRequestError, match=needle):
            client.completions.create(prompt=bad_prompt, **kw)
    with pytest.raises(openai.BadRequestError, match="expert's name"):
        client.completions.create(prompt=ids, **{**kw, "model": "coe"})
