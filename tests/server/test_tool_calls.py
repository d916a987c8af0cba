"""Reading tool calls back from an expert's answer, in the three formats models are trained on:
what is a call, what stays text, and a stream that never shows a call's text as content."""

from __future__ import annotations

import json

import pytest

from coeflow.server.tools import FORMATS, ToolUse, detect, takes_tools

NAMES = frozenset({"get_weather", "add"})

# (format, the answer as a model writes it, the text outside the calls, the calls as (name, arguments))
ANSWERS = [
    ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
     "", [("get_weather", {"city": "Paris"})]),
    ("hermes", 'Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n'
     '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>',
     "Let me look.", [("get_weather", {"city": "Oslo"}), ("add", {"a": 1, "b": 2})]),
    ("hermes", '<tool_call>\n{"name": "add", "arguments": "{\\"a\\": 1}"}', "", [("add", {"a": 1})]),  # unclosed
    ("llama3_json", '{"name": "get_weather", "parameters": {"city": "Lima"}}', "", [("get_weather", {"city": "Lima"})]),
    ("llama3_json", '<|python_tag|>{"name": "add", "parameters": {"a": 1}}; {"name": "add", "parameters": {"a": 2}}',
     "", [("add", {"a": 1}), ("add", {"a": 2})]),
    ("mistral", '[TOOL_CALLS] [{"name": "add", "arguments": {"a": 3}}]', "", [("add", {"a": 3})]),
    ("mistral", '[{"name": "get_weather", "arguments": {"city": "Rome"}}]', "", [("get_weather", {"city": "Rome"})]),
]

NOT_CALLS = [
    ("hermes", "No tools needed: 4."),
    ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": {"city": </tool_call>'),  # broken JSON
    ("hermes", '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>'),  # not a tool offered
    ("llama3_json", "The weather is fine."),
    ("llama3_json", '{"city": "Paris"}'),  # JSON, but no call
    ("llama3_json", '{"name": "add", "parameters": {"a": 1}} and then some words'),
    ("mistral", "[1, 2, 3]"),
    ("mistral", "[a link](http://x)"),
]


@pytest.mark.parametrize("fmt,text,content,calls", ANSWERS)
def test_an_answer_in_the_format_is_read_as_its_calls(fmt, text, content, calls):
    got = ToolUse(FORMATS[fmt], NAMES).parse(text)
    assert got is not None
    assert got[0].strip() == content
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in got[1]] == calls
    assert all(c["type"] == "function" and c["id"] for c in got[1])
    assert len({c["id"] for c in got[1]}) == len(calls)


@pytest.mark.parametrize("fmt,text", NOT_CALLS)
def test_an_answer_that_is_not_wholly_calls_to_offered_tools_is_text(fmt, text):
    assert ToolUse(FORMATS[fmt], NAMES).parse(text) is None


def test_mistral_call_ids_are_the_nine_characters_its_templates_demand():
    got = ToolUse(FORMATS["mistral"], NAMES).parse('[{"name": "add", "arguments": {}}]')
    assert got is not None and len(got[1][0]["id"]) == 9 and got[1][0]["id"].isalnum()


def _streamed(fmt: str, text: str, cut: int) -> tuple[str, list]:
    s = ToolUse(FORMATS[fmt], NAMES).stream()
    sent = [s.feed(text[i:i + cut]) for i in range(0, len(text), cut)]
    rest, calls = s.finish()
    return "".join(sent) + rest, [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls]


@pytest.mark.parametrize("cut", [1, 2, 5, 1000])
@pytest.mark.parametrize("fmt,text,content,calls", ANSWERS)
def test_a_stream_in_any_pieces_sends_the_text_and_the_same_calls(fmt, text, content, calls, cut):
    sent, got = _streamed(fmt, text, cut)
    assert sent.strip() == content and got == calls


@pytest.mark.parametrize("cut", [1, 3])
@pytest.mark.parametrize("fmt,text", NOT_CALLS)
def test_a_stream_that_calls_nothing_sends_all_its_text(fmt, text, cut):
    assert _streamed(fmt, text, cut) == (text, [])


def test_text_before_a_call_streams_as_it_comes_and_a_half_marker_is_held():
    s = ToolUse(FORMATS["hermes"], NAMES).stream()
    assert s.feed("Checking the ") == "Checking the "
    assert s.feed("weather <tool") == "weather "  # may be "<tool_call>": held
    assert s.feed("box>") == "<toolbox>"  # was not


def test_the_format_is_read_from_a_templates_markers():
    assert detect("{% if tools %}<tool_call>{{ tools | tojson }}</tool_call>{% endif %}").name == "hermes"
    assert detect("<|start_header_id|>ipython<|end_header_id|>{{ tools }}").name == "llama3_json"
    assert detect("[AVAILABLE_TOOLS]{{ tools }}[/AVAILABLE_TOOLS][TOOL_CALLS]").name == "mistral"
    assert detect("{{ messages }}") is None
    assert takes_tools("{% if tools %}x{% endif %}") and not takes_tools("{{ tool_choice_x }}{{ messages }}")


def test_the_demo_template_writes_what_its_experts_learnt_and_takes_tools_in_hermes_blocks():
    from tokenizers import Tokenizer as HF, models

    from coeflow.demo.tokenizer import CHAT_TEMPLATE
    from coeflow.model.tokenizer import Tokenizer
    tok = Tokenizer(HF(models.BPE()), "<s>", "</s>", CHAT_TEMPLATE)
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi\nthere"},
            {"role": "assistant", "content": "ok"}, {"role": "user", "content": "x"}]
    assert tok.apply_chat_template(chat) == ("<s><|system|>\nbe brief</s>\n<|user|>\nhi\nthere</s>\n"
                                             "<|assistant|>\nok</s>\n<|user|>\nx</s>\n<|assistant|>\n")
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    called = chat[:2] + [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "add", "arguments": {"a": 1}}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "2"}]
    text = tok.apply_chat_template(called, tools=tools)
    assert text.startswith("<s><|system|>\nYou can call these functions")
    assert '\n{"name": "add", "parameters": {"type": "object"}}\n</s>\n' in text
    assert ('<|assistant|>\n<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call></s>\n'
            '<|user|>\n<tool_response>2</tool_response></s>\n<|assistant|>\n') in text
    assert detect(CHAT_TEMPLATE).name == "hermes" and takes_tools(CHAT_TEMPLATE)
