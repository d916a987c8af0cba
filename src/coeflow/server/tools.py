"""Tool calling: the request's tools go to the expert's chat template (as transformers passes
them), and the expert's answer is read back into OpenAI `tool_calls` in the format its template
taught it. Three formats, chosen per expert (`tool_call_format` in the CoE file, else from its
template's markers):

- `hermes` (Qwen2.5, Hermes, many fine-tunes): `<tool_call>{"name": .., "arguments": {..}}</tool_call>`
  blocks, with text around them;
- `llama3_json` (Llama 3.1+): the whole answer is `{"name": .., "parameters": {..}}`, several
  separated by `;`, maybe after `<|python_tag|>`;
- `mistral`: `[TOOL_CALLS]` then a JSON list of `{"name": .., "arguments": {..}}`.

An answer whose calls do not all parse, or that names a tool the request did not offer, is
text. `tool_choice` `required` or a named function constrains decoding to the format's calls
(server/structured.py's matcher, with a grammar built here), so such an answer always calls.
A streamed answer sends its text as it comes, holding back what may be the start of a call;
each call comes in one delta when the answer ends."""

from __future__ import annotations

import json
import re
import secrets
import string
from dataclasses import dataclass
from typing import Any

from coeflow.server.structured import COMPACT, check_grammar

_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class Call:
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolFormat:
    """How one family of models writes its calls."""

    name = ""
    markers: tuple[str, ...] = ()  # what in a chat template shows it teaches this format

    def parse(self, text: str) -> tuple[str, list[Call]] | None:
        """(the text outside the calls, the calls), or None when `text` is not calls."""
        raise NotImplementedError

    def streamable(self, text: str) -> int:
        """How much of `text` (an answer so far) is text whatever comes next."""
        raise NotImplementedError

    def grammar(self, calls: dict, parallel: bool) -> str:
        """A Lark grammar (llguidance's) of answers that are only calls matching `calls`, a
        JSON schema of one call's object as this format writes it."""
        raise NotImplementedError

    def call_schema(self, name: str, parameters: dict) -> dict:
        return _object({"name": {"const": name}, "arguments": parameters})

    def call_id(self) -> str:
        return "call_" + secrets.token_hex(12)


class Hermes(ToolFormat):
    name = "hermes"
    START, END = "<tool_call>", "</tool_call>"
    markers = (START,)

    def parse(self, text: str) -> tuple[str, list[Call]] | None:
        if self.START not in text:
            return None
        content, calls, rest = [], [], text
        while self.START in rest:
            before, _, rest = rest.partition(self.START)
            body, _, rest = rest.partition(self.END)
            call = _call(body, "arguments")  # the last may be unclosed: the answer ended there
            if call is None:
                return None
            content.append(before)
            calls.append(call)
        content.append(rest)
        return "".join(content), calls

    def streamable(self, text: str) -> int:
        at = text.find(self.START)
        return at if at >= 0 else len(text) - _held(text, self.START)

    def grammar(self, calls: dict, parallel: bool) -> str:
        block = f'"{self.START}\\n" call "\\n{self.END}"'
        return _lark(f'{block} ("\\n" {block})*' if parallel else block, calls)


class Llama3Json(ToolFormat):
    name = "llama3_json"
    TAG = "<|python_tag|>"
    markers = (TAG, "ipython")

    def parse(self, text: str) -> tuple[str, list[Call]] | None:
        s = text.strip()
        s = s[len(self.TAG):] if s.startswith(self.TAG) else s
        calls, at = [], 0
        while at < len(s):
            try:
                obj, end = _DECODER.raw_decode(s, at)
            except ValueError:
                return None
            call = _from_object(obj, "parameters") or _from_object(obj, "arguments")
            if call is None:
                return None
            calls.append(call)
            at = end
            while at < len(s) and (s[at].isspace() or s[at] == ";"):
                at += 1
        return ("", calls) if calls else None

    def streamable(self, text: str) -> int:
        s = text.lstrip()
        if not s or s.startswith("{") or s.startswith(self.TAG) or self.TAG.startswith(s):
            return 0  # the whole answer may be a call
        return len(text)

    def call_schema(self, name: str, parameters: dict) -> dict:
        return _object({"name": {"const": name}, "parameters": parameters})

    def grammar(self, calls: dict, parallel: bool) -> str:
        return _lark('call ("; " call)*' if parallel else "call", calls)


class Mistral(ToolFormat):
    name = "mistral"
    START = "[TOOL_CALLS]"
    markers = (START,)

    def parse(self, text: str) -> tuple[str, list[Call]] | None:
        before, found, rest = text.partition(self.START)
        if not found:
            if not text.lstrip().startswith("["):
                return None
            before, rest = "", text  # the marker is a special token, so it may not be in the text
        try:
            items, end = _DECODER.raw_decode(rest.strip())
        except ValueError:
            return None
        if end != len(rest.strip()) or not isinstance(items, list) or not items:
            return None
        calls = [_from_object(i, "arguments") for i in items]
        return None if None in calls else (before, calls)  # type: ignore[return-value]

    def streamable(self, text: str) -> int:
        at = text.find(self.START)
        if at >= 0:
            return at
        s = text.lstrip()
        return 0 if not s or s.startswith("[") else len(text) - _held(text, self.START)

    def grammar(self, calls: dict, parallel: bool) -> str:
        # the list alone: "[TOOL_CALLS]" is a special token, which no text literal can match
        schema = {"type": "array", "items": calls, "minItems": 1, "x-guidance": COMPACT}
        if not parallel:
            schema["maxItems"] = 1
        return f"start: %json {json.dumps(schema)}\n"

    def call_id(self) -> str:
        # Mistral's templates refuse a call id that is not 9 letters and digits
        return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(9))


FORMATS: dict[str, ToolFormat] = {f.name: f for f in (Hermes(), Llama3Json(), Mistral())}
_USES_TOOLS = re.compile(r"\btools\b")


def takes_tools(template: str | None) -> bool:
    """Whether a chat template reads the `tools` it is given (transformers' convention)."""
    return bool(template) and bool(_USES_TOOLS.search(template))


def detect(template: str | None) -> ToolFormat | None:
    """The format a chat template teaches, by its markers; None when it shows none."""
    for fmt in FORMATS.values():
        if template and any(m in template for m in fmt.markers):
            return fmt
    return None


def tool_schema(fmt: ToolFormat, tools: list[dict], only: str | None) -> dict:
    """One call's JSON schema: to any of the tools, or to the one named."""
    options = [fmt.call_schema(t["function"]["name"], t["function"].get("parameters") or _object({}))
               for t in tools if only is None or t["function"]["name"] == only]
    return options[0] if len(options) == 1 else {"anyOf": options}


def call_grammar(fmt: ToolFormat, tools: list[dict], only: str | None, parallel: bool) -> str:
    """The grammar of an answer that calls (`tool_choice` required, or one named function).
    ValueError saying why for parameter schemas the matcher cannot take."""
    grammar = fmt.grammar(tool_schema(fmt, tools, only), parallel and only is None)
    check_grammar(grammar)
    return grammar


@dataclass
class ToolUse:
    """The tools a request offers, read back from one expert's answers in its format."""
    format: ToolFormat
    names: frozenset[str]

    def parse(self, text: str) -> tuple[str, list[dict]] | None:
        """(text outside the calls, the calls in OpenAI's shape), or None when `text` calls nothing."""
        got = self.format.parse(text)
        if got is None or any(c.name not in self.names for c in got[1]):
            return None
        return got[0], [{"id": self.format.call_id(), "type": "function",
                         "function": {"name": c.name, "arguments": c.arguments}} for c in got[1]]

    def stream(self) -> "ToolStream":
        return ToolStream(self)


class ToolStream:
    """One streamed choice: text passed on as it comes, what may be a call held back."""

    def __init__(self, use: ToolUse) -> None:
        self.use, self.text, self.sent = use, "", 0

    def feed(self, piece: str) -> str:
        """The text that can be sent now."""
        self.text += piece
        upto = max(self.sent, self.use.format.streamable(self.text))
        out, self.sent = self.text[self.sent:upto], upto
        return out

    def finish(self) -> tuple[str, list[dict]]:
        """At the answer's end: the text not sent yet, and the calls."""
        got = self.use.parse(self.text)
        if got is None:
            return self.text[self.sent:], []
        content, calls = got
        return content[self.sent:] if content.strip() else "", calls


def _held(text: str, marker: str) -> int:
    """The length of the longest end of `text` that may be the start of `marker`."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


def _call(body: str, key: str) -> Call | None:
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    return _from_object(obj, key)


def _from_object(obj: Any, key: str) -> Call | None:
    """A call from `{"name": .., key: {..}}`; arguments written as a JSON string are taken too."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or key not in obj:
        return None
    args = obj[key]
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return Call(obj["name"], json.dumps(args, ensure_ascii=False))


def _object(properties: dict) -> dict:
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False}


def _lark(start: str, calls: dict) -> str:
    return f"start: {start}\ncall: %json {json.dumps({**calls, 'x-guidance': COMPACT})}\n"
