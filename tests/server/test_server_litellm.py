"""A second real client, litellm (what many agent frameworks call through), against the served
CoE: chat, streaming, a tool call round trip, a JSON-schema answer, logprobs, n and penalties,
each as litellm sends and reads them (its `openai/` provider pointed at coeflow)."""

from __future__ import annotations

import json
import math
import os

import jsonschema
import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # it would fetch a price list at import
import litellm  # noqa: E402

from test_server_tools import ASK, SCHEMAS, TOOLS, served  # noqa: E402,F401  (the fixture: a CoE with tools)


@pytest.fixture
def call(served):
    def complete(**kw):
        return litellm.completion(model="openai/" + kw.pop("model", "sql"), api_base=served[1], api_key="unused",
                                  messages=kw.pop("messages", ASK), timeout=60, num_retries=0, **kw)
    return complete


def test_chat_and_its_stream_agree(call):
    whole = call(max_tokens=8, temperature=0, extra_body={"ignore_eos": True})
    assert whole.usage.completion_tokens == 8 and whole.choices[0].message.content
    text = "".join(c.choices[0].delta.content or "" for c in call(max_tokens=8, temperature=0, stream=True,
                                                                   extra_body={"ignore_eos": True}))
    assert text == whole.choices[0].message.content


def test_a_tool_call_round_trip(call):
    r = call(tools=TOOLS, tool_choice="required", parallel_tool_calls=False, max_tokens=80, temperature=0)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    (tc,) = choice.message.tool_calls
    jsonschema.validate(json.loads(tc.function.arguments), SCHEMAS[tc.function.name])
    history = ASK + [{"role": "assistant", "content": None, "tool_calls": [
        {"id": tc.id, "type": "function", "function": {"name": tc.function.name, "arguments": tc.function.arguments}}]},
        {"role": "tool", "tool_call_id": tc.id, "content": "21 C"}]
    again = call(messages=history, tools=TOOLS, max_tokens=4, temperature=0)
    assert again.usage.prompt_tokens > r.usage.prompt_tokens


def test_a_streamed_tool_call(call):
    chunks = list(call(tools=TOOLS, tool_choice="required", parallel_tool_calls=False, max_tokens=80,
                       temperature=0, stream=True))
    rebuilt = litellm.stream_chunk_builder(chunks)
    (tc,) = rebuilt.choices[0].message.tool_calls
    jsonschema.validate(json.loads(tc.function.arguments), SCHEMAS[tc.function.name])


def test_a_json_schema_answer_validates(call):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0,
                                                                                  "maximum": 9}},
              "required": ["ok", "n"], "additionalProperties": False}
    r = call(max_tokens=60, temperature=0.7, seed=1,
             response_format={"type": "json_schema", "json_schema": {"name": "t", "schema": schema}})
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)


def test_logprobs_n_and_penalties(call):
    r = call(max_tokens=5, temperature=0, logprobs=True, top_logprobs=3, extra_body={"ignore_eos": True})
    content = r.choices[0].logprobs.content
    assert len(content) == 5
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        assert sum(math.exp(t.logprob) for t in entry.top_logprobs) <= 1 + 1e-6
    three = call(max_tokens=6, temperature=1.0, seed=4, n=3)
    assert [c.index for c in three.choices] == [0, 1, 2]
    plain = call(max_tokens=30, temperature=0, extra_body={"ignore_eos": True}).choices[0].message.content
    worn = call(max_tokens=30, temperature=0, frequency_penalty=2.0, presence_penalty=2.0,
                extra_body={"ignore_eos": True}).choices[0].message.content
    assert worn != plain
