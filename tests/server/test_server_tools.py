"""Tools through the official client against a served CoE: a call and its answer round trip,
streamed as OpenAI streams calls, in each expert's format; an expert that cannot take tools and
malformed tool turns are 400s naming the field. The experts have random weights, so a call is
asked for (tool_choice required, or a named function), which constrains decoding to one."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest
import yaml

from coe_fixture import start, write_coe

# A template in the Hermes style (Qwen2.5's): the tools in the system turn, calls in <tool_call>
# blocks, results in <tool_response> blocks.
HERMES = """{{ bos_token }}{% if tools %}<|system|>
Functions: {% for t in tools %}{{ t.function.name }}({{ t.function.parameters.properties | list | join(', ') }}) {% endfor %}
{% endif %}{% for m in messages %}{% if m.role == 'tool' %}<|user|>
<tool_response>{{ m.content }}</tool_response>
{% elif m.tool_calls %}<|assistant|>
{% for c in m.tool_calls %}<tool_call>
{{ {"name": c.function.name, "arguments": c.function.arguments} | tojson }}
</tool_call>
{% endfor %}{% else %}<|{{ m.role }}|>
{{ m.content }}
{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>
{% endif %}"""
# The same turns, but calls as Llama 3.1 writes them (a bare JSON object with "parameters").
LLAMA3 = HERMES.replace("<tool_call>", "<|python_tag|>").replace("</tool_call>", "")

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo", "Lima"]},
                                                   "unit": {"type": "string", "enum": ["C", "F"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
ADD = {"type": "function", "function": {
    "name": "add", "parameters": {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99},
                                                                 "b": {"type": "integer", "minimum": 0, "maximum": 99}},
                                  "required": ["a", "b"], "additionalProperties": False}}}
TOOLS = [WEATHER, ADD]
ASK = [{"role": "user", "content": "what is the weather in Paris?"}]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("tools")
    coe = write_coe(root)
    (root / "hermes.jinja").write_text(HERMES)
    (root / "llama3.jinja").write_text(LLAMA3)
    doc = yaml.safe_load(coe.read_text())
    for e in doc["experts"]:  # sql: Hermes; shell: Llama 3 (named in the file); general: no tools
        if e["name"] == "sql":
            e["chat_template"] = "hermes.jinja"
        elif e["name"] == "shell":
            e["chat_template"], e["tool_call_format"] = "llama3.jinja", "llama3_json"
    coe.write_text(yaml.safe_dump(doc))
    srv, ctx = start(coe)
    with ctx as url:
        yield srv, url


@pytest.fixture
def client(served):
    return openai.OpenAI(base_url=served[1], api_key="unused", max_retries=0, timeout=60)


def _check(call) -> dict:
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, SCHEMAS[call.function.name])
    assert call.type == "function" and call.id
    return args


@pytest.mark.parametrize("expert", ["sql", "shell"])
def test_a_required_call_round_trips_through_the_client(client, expert):
    r = client.chat.completions.create(model=expert, messages=ASK, tools=TOOLS, tool_choice="required",
                                       parallel_tool_calls=False, max_tokens=80, temperature=0)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    _check(call)
    # the client runs the tool and sends its result back, as an agent does
    # the assistant turn as agents send it back: content null, the call as it came
    called = {"role": "assistant", "content": None, "tool_calls": [
        {"id": call.id, "type": "function", "function": {"name": call.function.name,
                                                         "arguments": call.function.arguments}}]}
    history = ASK + [called, {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'}]
    again = client.chat.completions.create(model=expert, messages=history, tools=TOOLS, max_tokens=8,
                                           temperature=0)
    assert again.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert again.usage.prompt_tokens > r.usage.prompt_tokens  # the call and its result are in the prompt


def test_a_named_function_is_the_one_called(client):
    r = client.chat.completions.create(model="sql", messages=ASK, tools=TOOLS, max_tokens=120, temperature=0.8,
                                       seed=3, tool_choice={"type": "function", "function": {"name": "add"}})
    calls = r.choices[0].message.tool_calls
    assert calls and all(c.function.name == "add" for c in calls)
    for c in calls:
        args = _check(c)
        assert isinstance(args["a"], int) and isinstance(args["b"], int)


@pytest.mark.parametrize("expert", ["sql", "shell"])
def test_a_streamed_call_comes_as_tool_call_deltas_and_equals_the_whole_answer(client, expert):
    kw = dict(model=expert, messages=ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
              max_tokens=80, temperature=0)
    whole = client.chat.completions.create(**kw).choices[0].message.tool_calls[0]
    deltas, reasons, content = [], [], ""
    for chunk in client.chat.completions.create(**kw, stream=True):
        for c in chunk.choices:
            deltas += c.delta.tool_calls or []
            content += c.delta.content or ""
            reasons.append(c.finish_reason)
    assert content == "" and reasons[-1] == "tool_calls"
    assert {d.index for d in deltas} == {0} and deltas[0].id and deltas[0].type == "function"
    assert deltas[0].function.name == whole.function.name
    assert "".join(d.function.arguments or "" for d in deltas) == whole.function.arguments


def test_each_of_n_choices_calls(client):
    r = client.chat.completions.create(model="sql", messages=ASK, tools=TOOLS, tool_choice="required", n=3,
                                       parallel_tool_calls=False, max_tokens=160, temperature=1.0, seed=5)
    assert len(r.choices) == 3
    for choice in r.choices:
        assert choice.finish_reason == "tool_calls"
        _check(choice.message.tool_calls[0])


def test_tools_reach_the_template_and_tool_choice_none_leaves_them_out(served, client):
    srv, _ = served
    tokenizer = srv.runtimes["sql"].tokenizer
    with_tools = client.chat.completions.create(model="sql", messages=ASK, tools=TOOLS, max_tokens=1)
    without = client.chat.completions.create(model="sql", messages=ASK, tools=TOOLS, tool_choice="none", max_tokens=1)
    bare = client.chat.completions.create(model="sql", messages=ASK, max_tokens=1)
    expected = len(tokenizer.encode_chat(ASK, TOOLS))
    assert with_tools.usage.prompt_tokens == expected > without.usage.prompt_tokens == bare.usage.prompt_tokens
    called = {**CALLED, "tool_calls": [{**CALLED["tool_calls"][0], "function": {"name": "add", "arguments": {
        "a": "<b>"}}}]}
    rendered = tokenizer.apply_chat_template(ASK + [called], tools=TOOLS)
    assert "get_weather(city, unit) add(a, b)" in rendered
    assert '{"name": "add", "arguments": {"a": "<b>"}}' in rendered  # JSON as written, not HTML-escaped


def test_an_expert_whose_template_takes_no_tools_says_so(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="general", messages=ASK, tools=TOOLS, max_tokens=4)
    assert e.value.body["param"] == "tools" and "cannot call tools" in e.value.body["message"]
    # the same request without tools, or with tool_choice none, is served
    assert client.chat.completions.create(model="general", messages=ASK, tools=TOOLS, tool_choice="none",
                                          max_tokens=2).choices[0].message.content is not None


CALLED = {"role": "assistant", "content": None,
          "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}]}


@pytest.mark.parametrize("extra,param,needle", [
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice", "not one of"),
    ({"tool_choice": "always"}, "tool_choice", "required"),
    ({"tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools[0].function.name", "letters"),
    ({"tools": [WEATHER, WEATHER]}, "tools", "once"),
    ({"tools": [{"type": "retrieval"}]}, "tools[0].type", "function"),
    ({"messages": ASK + [{"role": "assistant", "content": None}]}, "messages[1]", "content"),
    ({"messages": ASK + [CALLED, {"role": "tool", "content": "3"}]}, "messages[2]", "tool_call_id"),
    ({"messages": ASK + [{**CALLED, "tool_calls": [{**CALLED["tool_calls"][0], "function": {
        "name": "add", "arguments": "{a: 1"}}]}]}, "messages[1].tool_calls[0].function.arguments", "JSON object"),
    ({"messages": [{"role": "user", "content": "x", "tool_calls": CALLED["tool_calls"]}]}, "messages[0]", "assistant"),
    ({"response_format": {"type": "json_object"}, "tool_choice": "required"}, "response_format", "tool_choice"),
])
def test_bad_tool_fields_are_refused_by_name(served, extra, param, needle):
    body = {"model": "sql", "messages": ASK, "tools": TOOLS, "max_tokens": 4, **extra}
    r = httpx.post(f"{served[1]}/chat/completions", json=body, timeout=30)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and needle in err["message"]


def test_completions_refuse_tools_rather_than_ignore_them(served):
    r = httpx.post(f"{served[1]}/completions", timeout=30,
                   json={"model": "sql", "prompt": "x", "tools": TOOLS, "max_tokens": 2})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools"
