"""Sampling and output parameters through the official client: logprobs in chat's and
completions' shapes (streamed too), penalties and logit biases that change the answer, and
bad values refused by name."""

from __future__ import annotations

import json
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


def test_a_logit_bias_forces_a_token_and_a_frequency_penalty_wears_it_down(live, client):
    seven = live[0].runtimes["sql"].tokenizer.decode([7])
    plain = client.completions.create(model="sql", prompt="select", max_tokens=40, temperature=0, logprobs=0,
                                      extra_body={"ignore_eos": True})
    assert plain.choices[0].logprobs.tokens != [seven] * 40  # the model alone does not say it
    forced = client.completions.create(model="sql", prompt="select", max_tokens=40, temperature=0,
                                       logit_bias={"7": 30}, logprobs=0, extra_body={"ignore_eos": True})
    assert forced.choices[0].logprobs.tokens == [seven] * 40
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
    for bad_prompt, needle in (([10**9], "vocabulary"), ([-1], "negative"), ([ids, []], "token ids")):
        with pytest.raises(openai.BadRequestError, match=needle):
            client.completions.create(prompt=bad_prompt, **kw)
    with pytest.raises(openai.BadRequestError, match="expert's name"):
        client.completions.create(prompt=ids, **{**kw, "model": "coe"})


def test_an_experts_defaults_fill_the_fields_a_request_leaves_unset(coe_file, tmp_path):
    import json
    import shutil

    import yaml
    from openai import OpenAI

    from coe_fixture import start
    root = tmp_path / "coe"
    shutil.copytree(coe_file.parent, root)
    doc = yaml.safe_load((root / "coe.yaml").read_text())
    next(e for e in doc["experts"] if e["name"] == "sql")["sampling"] = {"temperature": 0.0}  # the CoE file's
    (root / "coe.yaml").write_text(yaml.safe_dump(doc))
    config = root / "experts" / "shell" / "generation_config.json"  # the checkpoint's own
    config.write_text(json.dumps({**json.loads(config.read_text()), "temperature": 0.0}))
    srv, ctx = start(root / "coe.yaml")
    with ctx as url:
        client = OpenAI(base_url=url, api_key="x", max_retries=0)

        def texts(model: str, **kw) -> set[str]:
            return {client.completions.create(model=model, prompt="select", max_tokens=20, seed=s,
                                              extra_body={"ignore_eos": True}, **kw).choices[0].text for s in (1, 2, 3)}
        assert len(texts("sql")) == 1 and len(texts("shell")) == 1  # greedy by their defaults
        assert len(texts("general")) > 1  # OpenAI's default temperature, 1
        assert len(texts("sql", temperature=1.0)) > 1  # the request's own value wins


def test_a_coe_files_sampling_defaults_are_checked(coe_file, tmp_path):
    import shutil

    import yaml

    from coeflow.coefile import load_coe
    from coeflow.errors import ConfigError
    root = tmp_path / "coe"
    shutil.copytree(coe_file.parent, root)
    doc = yaml.safe_load((root / "coe.yaml").read_text())
    doc["experts"][0]["sampling"] = {"temperature": 5.0}
    (root / "coe.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="temperature"):
        load_coe(root / "coe.yaml")
    doc["experts"][0]["sampling"] = {"temprature": 0.5}
    (root / "coe.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="temprature"):
        load_coe(root / "coe.yaml")


def test_n_choices_each_a_sequence_of_their_own_whole_and_streamed(client):
    kw = dict(model="sql", messages=USER, max_tokens=8, temperature=1.0, seed=7, n=3, extra_body={"ignore_eos": True})
    r = client.chat.completions.create(**kw)
    texts = [c.message.content for c in r.choices]
    assert [c.index for c in r.choices] == [0, 1, 2] and len(set(texts)) == 3  # seed + i: each choice its own draw
    assert r.usage.completion_tokens == 24
    assert [c.message.content for c in client.chat.completions.create(**kw).choices] == texts  # and repeatable
    parts: dict[int, str] = {0: "", 1: "", 2: ""}
    finished = set()
    for chunk in client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}):
        for c in chunk.choices:
            parts[c.index] += c.delta.content or ""
            if c.finish_reason:
                finished.add(c.index)
        if chunk.usage:
            assert chunk.usage.completion_tokens == 24
    assert finished == {0, 1, 2} and [parts[i] for i in range(3)] == texts
    greedy = client.completions.create(model="sql", prompt="select", max_tokens=6, temperature=0, n=2)
    assert greedy.choices[0].text == greedy.choices[1].text


NAME = {"type": "string", "maxLength": 12}  # bounded, so that a random model's answer ends
SCHEMAS = [
    {"type": "object", "properties": {"name": NAME, "age": {"type": "integer", "minimum": 0, "maximum": 150}},
     "required": ["name", "age"], "additionalProperties": False},
    {"type": "object", "properties": {"kind": {"enum": ["sql", "shell", "python"]}, "ok": {"type": "boolean"}},
     "required": ["kind", "ok"], "additionalProperties": False},
    {"type": "object", "properties": {"rows": {"type": "array", "items": {"type": "object", "properties": {
        "id": {"type": "integer", "minimum": 0, "maximum": 99},
        "tags": {"type": "array", "items": NAME, "maxItems": 2}},
        "required": ["id", "tags"], "additionalProperties": False}, "maxItems": 3}},
     "required": ["rows"], "additionalProperties": False},
    {"type": "object", "properties": {"score": {"type": "integer", "minimum": -5, "maximum": 5},
                                      "note": {"anyOf": [NAME, {"type": "null"}]}},
     "required": ["score", "note"], "additionalProperties": False},
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=["flat", "enum", "nested", "nullable"])
def test_a_json_schema_answer_always_parses_and_validates(client, schema):
    import jsonschema
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    for seed in range(3):  # sampled, so each draw takes another path through the schema
        r = client.chat.completions.create(model="sql", messages=USER, max_tokens=200, temperature=1.0, seed=seed,
                                           response_format=fmt)
        assert r.choices[0].finish_reason == "stop", r.choices[0].message.content  # it ended, whole
        jsonschema.validate(json.loads(r.choices[0].message.content), schema)


def test_json_object_mode_gives_an_object_streamed_too_and_a_bad_schema_is_a_400(client):
    fmt = {"type": "json_object"}  # keys and strings unbounded: a random model may run out of tokens first
    answers = [client.chat.completions.create(model="sql", messages=USER, max_tokens=200, temperature=0.8, seed=s,
                                              response_format=fmt).choices[0] for s in range(4)]
    whole = [a.message.content for a in answers if a.finish_reason == "stop"]
    assert whole and all(isinstance(json.loads(t), dict) for t in whole)
    assert all(a.message.content.startswith("{") for a in answers)
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="sql", messages=USER, max_tokens=200, temperature=0.8, seed=0, response_format=fmt, stream=True)
        if c.choices)
    assert text == answers[0].message.content
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="sql", messages=USER, max_tokens=5,
                                       response_format={"type": "json_schema", "json_schema": {"name": "x",
                                                                                               "schema": "nope"}})
    assert e.value.body["param"] == "response_format"
    with pytest.raises(openai.BadRequestError) as e:  # once the JSON is whole, only EOS may follow
        client.chat.completions.create(model="sql", messages=USER, max_tokens=5, response_format=fmt,
                                       extra_body={"ignore_eos": True})
    assert e.value.body["param"] == "ignore_eos"


def test_logprobs_under_a_schema_are_the_models_own_not_the_masks(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "b", "schema": {"type": "boolean"}}}
    kw = dict(model="sql", messages=USER, max_tokens=10, temperature=0, logprobs=True, top_logprobs=20)
    free = {t.token: t.logprob for t in client.chat.completions.create(**kw).choices[0].logprobs.content[0].top_logprobs}
    r = client.chat.completions.create(**kw, response_format=fmt)
    assert r.choices[0].message.content in ("true", "false")
    first = r.choices[0].logprobs.content[0]
    if first.token in free:  # the same number the unconstrained answer reports for it
        assert first.logprob == pytest.approx(free[first.token])
    else:  # not among the model's 20 likeliest: less likely than all of them, whatever the mask allowed
        assert first.logprob < min(free.values())


def test_several_prompts_each_get_n_choices_in_prompt_order(live, client):
    srv, _ = live
    ids = srv.runtimes["sql"].tokenizer.encode("count rows")
    kw = dict(model="sql", max_tokens=5, temperature=0, extra_body={"ignore_eos": True})
    alone = [client.completions.create(prompt=p, **kw) for p in ("select name from", ids)]
    r = client.completions.create(prompt=["select name from", ids], n=2, **kw)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert [c.text for c in r.choices] == [alone[0].choices[0].text] * 2 + [alone[1].choices[0].text] * 2
    assert r.usage.prompt_tokens == alone[0].usage.prompt_tokens + alone[1].usage.prompt_tokens
    assert r.usage.completion_tokens == 4 * 5
    streamed = ["", "", "", ""]
    for chunk in client.completions.create(prompt=["select name from", ids], n=2, stream=True, **kw):
        for c in chunk.choices:
            streamed[c.index] += c.text
    assert streamed == [c.text for c in r.choices]


@pytest.mark.parametrize("prompt,n,needle", [
    (["x"] * 17, 1, "at most 16 prompts"),
    (["x"] * 5, 4, "at most 16 sequences"),
    (["x", 3], 1, "[1]"),
    ([], 1, "non-empty"),
])
def test_too_many_or_malformed_prompts_are_refused(client, prompt, n, needle):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="sql", prompt=prompt, n=n, max_tokens=2)
    assert needle in e.value.body["message"]
