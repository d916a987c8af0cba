"""The OpenAI wire format: request bodies as pydantic models whose errors say what to fix, and
the error shape every OpenAI client understands.

Every field of OpenAI's chat and completions requests is honoured or, set to anything that
would change the answer, refused with a 400 naming it (UNSUPPORTED): never answered as if it
were not there. Fields OpenAI does not define are ignored (clients and proxies add their own).
A field sent as `null` means the field is not set."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from coeflow.coefile import SAMPLING_DEFAULTS
from coeflow.engine import InvalidRequestError, SamplingParams
from coeflow.engine.sampling import SEED_MAX, SEED_MIN
from coeflow.sampling_ranges import RANGES
from coeflow.server.options import Limits
from coeflow.server.structured import grammar_for
from coeflow.validation import field_path, problem

ROLES = ("system", "developer", "user", "assistant", "tool")
ROUTED = "coe"  # the model name that lets the router choose the expert
MAX_CHOICES = 16  # `n`: choices of one request, each a sequence of its own (prompts x n, in completions)
MAX_PROMPTS = 16  # prompts of one completions request
TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ModelT = TypeVar("_ModelT", bound=BaseModel)

# OpenAI request fields coeflow does not honour: each with the values that ask for nothing (the
# field's default, or what the answer is anyway); any other value is refused, naming the field.
UNSUPPORTED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "functions": (lambda v: v == [], "is not supported (OpenAI's older form): send 'tools'"),
    "function_call": (lambda v: v in ("none", "auto"), "is not supported (OpenAI's older form): send 'tool_choice'"),
    "echo": (lambda v: v is False, "is not supported"),
    "suffix": (lambda v: v == "", "is not supported: coeflow does not insert text"),
    "best_of": (lambda v: v == 1, "must be 1: coeflow does not rank candidates (use n)"),
    "modalities": (lambda v: v == ["text"], 'must be ["text"]: coeflow answers in text'),
    "audio": (lambda v: False, "is not supported: coeflow answers in text"),
    "web_search_options": (lambda v: False, "is not supported: coeflow does not search the web"),
    "reasoning_effort": (lambda v: False, "is not supported: the experts are not reasoning models"),
    "verbosity": (lambda v: False, "is not supported"),
    "store": (lambda v: v is False, "must be false: coeflow stores no completions"),
    "service_tier": (lambda v: v in ("auto", "default"), "must be 'auto' or 'default'"),
}


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad(message: str, param: str | None = None) -> APIError:
    return APIError(400, message, param=param)


def validation_error(e: ValidationError) -> APIError:
    """A 400 in the OpenAI shape for the first problem of a request body, naming its field:
    param "messages[0].role", message "'messages[0].role' must be one of ...". Every
    validation error of the server goes through here."""
    err = e.errors()[0]
    param = field_path(tuple(err["loc"])) or None
    what = problem(err, mapping="an object")
    return bad(f"{param!r} {what}" if param else f"the request body {what}", param)


@dataclass
class ParsedRequest:
    model: str
    messages: list[dict[str, Any]] | None  # chat, as templates read them (Message.for_template)
    prompts: list[str | list[int]] | None  # completions: each text, or the expert's token ids
    params: SamplingParams
    stream: bool
    include_usage: bool
    unset: frozenset[str] = frozenset()  # sampling fields the request left to the expert's defaults
    n: int = 1  # choices: one sequence each
    grammar: str | None = None  # what the output must match (response_format), llguidance's form
    tools: list[dict] | None = None  # offered to the expert's template (chat)
    must_call: str | None = None  # "required" (a tool) or a function's name: decoding is constrained to calls
    parallel_tool_calls: bool = True

    @property
    def choices(self) -> int:
        """Sequences of the request: n for each prompt, choice n * p + i is prompt p's i-th."""
        return self.n * (len(self.prompts) if self.prompts is not None else 1)

    @property
    def routing_text(self) -> str:
        """What the router reads: the user's words (the last user turn carries the intent), or
        the prompts, together: one expert answers a request."""
        if self.prompts is not None:
            return "\n".join(p for p in self.prompts if isinstance(p, str))  # token ids: named experts only
        users = [m["content"] for m in self.messages or [] if m["role"] == "user"]
        return users[-1] if users else self.messages[-1]["content"] or ""


def _unicode(text: str) -> str:
    """`text`, if it is text: JSON's escapes can spell half of a surrogate pair, which no
    tokenizer can encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"holds an unpaired surrogate ({text[e.start]!r} at {e.start}), not text") from None
    return text


class _Wire(BaseModel):
    """A JSON object from a client: unknown fields ignored, nothing coerced ("10" is not an
    integer), null the same as absent."""

    model_config = ConfigDict(extra="ignore", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, data: Any) -> Any:
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


def _all_text(v: Any) -> Any:
    """`v`, if every string in it is text (see _unicode): what a chat template renders must encode."""
    try:
        json.dumps(v, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("holds an unpaired surrogate, not text") from None
    return v


class CalledFunction(_Wire):
    name: str
    arguments: str  # a JSON object, as text

    _text = field_validator("name", "arguments")(_all_text)

    @field_validator("arguments")
    @classmethod
    def _object(cls, v: str) -> str:
        try:
            parsed = json.loads(v)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise ValueError("must be a JSON object written as a string")
        return v


class ToolCall(_Wire):
    """A call an earlier assistant turn made."""
    id: str
    type: Literal["function"] = "function"
    function: CalledFunction

    _text = field_validator("id")(_all_text)


class Message(_Wire):
    """One chat turn; `content` is a string or a list of text parts, joined. An assistant
    turn that called tools may have no content; a tool's turn answers one call."""

    role: str
    content: Any = None
    tool_calls: list[ToolCall] = []
    tool_call_id: str | None = None
    name: str | None = None

    _names = field_validator("tool_call_id", "name")(_all_text)

    @field_validator("role")
    @classmethod
    def _known_role(cls, v: str) -> str:
        if v not in ROLES:
            raise ValueError(f"must be one of {', '.join(ROLES)}")
        return v

    @field_validator("content", mode="before")
    @classmethod
    def _text(cls, v: Any) -> str:
        if isinstance(v, str):
            return _unicode(v)
        if isinstance(v, list):  # [{"type": "text", "text": ...}, ...]
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in v):
                raise ValueError("may hold only text parts ({\"type\": \"text\", \"text\": ...})")
            return _unicode("".join(p["text"] for p in v))
        raise ValueError("must be a string or a list of text parts")

    @model_validator(mode="after")
    def _whole(self) -> "Message":
        if self.tool_calls and self.role != "assistant":
            raise ValueError(f"has tool_calls, which only an assistant turn can have (its role is {self.role!r})")
        if self.content is None and not self.tool_calls:
            raise ValueError("needs 'content' (only an assistant turn with tool_calls may have none)")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("is a tool's answer, so it needs 'tool_call_id' (the id of the call it answers)")
        return self

    def for_template(self) -> dict[str, Any]:
        """The turn as chat templates read it (transformers' convention: a call's arguments as
        an object, not as JSON text)."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [{"id": c.id, "type": "function", "function": {
                "name": c.function.name, "arguments": json.loads(c.function.arguments)}} for c in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            out["name"] = self.name
        return out


class Function(_Wire):
    name: str
    description: str = ""
    parameters: dict[str, Any] = {}  # a JSON schema of the arguments; none: the function takes none
    strict: bool = False  # honoured either way when coeflow constrains a call: it follows the schema

    _text = field_validator("description", "parameters")(_all_text)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not TOOL_NAME.fullmatch(v):
            raise ValueError("must be 1 to 64 letters, digits, underscores or dashes")
        return v


class Tool(_Wire):
    type: Literal["function"]
    function: Function


class _Completion(_Wire):
    """The fields chat and completions share."""

    model: str = Field("", validate_default=True)
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float | None = None  # extension (transformers'); unset: the expert's default, or 1 (off)
    min_p: float | None = None  # extension; unset: the expert's default, or 0 (off)
    logit_bias: dict[str, float] = {}
    logprobs: Any = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None  # OpenAI's newer name; max_tokens wins when both are given
    # unset: the expert's default (its generation_config.json, or its CoE file entry), else OpenAI's
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # extension: 0 (or -1, as vLLM spells it) is off
    # each sampling field's range: coeflow.sampling_ranges
    seed: int | None = None
    stop: Any = ()
    stream: bool = False
    stream_options: dict[str, Any] = {}
    ignore_eos: bool = False  # extension: generate max_tokens tokens whatever the model says
    # honoured as what they are: identifiers of the caller, and a hint for prefix caching (which
    # coeflow does for every prompt) and for predicted output (an optimisation, not the answer)
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    metadata: dict[str, Any] | None = None
    prediction: Any = None
    functions: Any = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None  # text, json_object or json_schema (server/structured.py)
    echo: Any = None
    suffix: Any = None
    best_of: Any = None
    modalities: Any = None
    audio: Any = None
    web_search_options: Any = None
    reasoning_effort: Any = None
    verbosity: Any = None
    store: Any = None
    service_tier: Any = None

    @field_validator(*UNSUPPORTED)
    @classmethod
    def _asks_nothing(cls, v: Any, info: ValidationInfo) -> Any:
        asks_nothing, why = UNSUPPORTED[info.field_name]
        if v is not None and not asks_nothing(v):
            raise ValueError(why)
        return v

    @field_validator("model", mode="after")
    @classmethod
    def _named(cls, v: str) -> str:
        if not v:
            raise ValueError("is required: an expert's name, or 'coe' to let the router choose")
        return v

    @field_validator("n")
    @classmethod
    def _choices(cls, v: int) -> int:
        if not 1 <= v <= MAX_CHOICES:
            raise ValueError(f"must be from 1 to {MAX_CHOICES}, got {v}")
        return v

    @field_validator("top_k", mode="before")
    @classmethod
    def _minus_one_is_off(cls, v: Any) -> Any:
        return 0 if v == -1 and isinstance(v, int) and not isinstance(v, bool) else v  # vLLM's spelling of off

    @field_validator(*RANGES)
    @classmethod
    def _in_range(cls, v: float, info: ValidationInfo) -> float:
        why = RANGES[info.field_name].problem(v)
        if why:
            raise ValueError(why)
        return v

    @field_validator("logit_bias")
    @classmethod
    def _biases(cls, v: dict[str, float]) -> dict[str, float]:
        if len(v) > 300:
            raise ValueError(f"may bias at most 300 tokens, got {len(v)}")
        for token, bias in v.items():
            if not (token.isascii() and token.isdigit() and len(token) <= 10):
                raise ValueError(f"keys must be token ids, got {token[:20]!r}")
            if not -100 <= bias <= 100:
                raise ValueError(f"values must be between -100 and 100, got {bias} for token {token}")
        return v

    def logprob_count(self) -> int | None:
        """How many likeliest tokens to list beside each chosen one's log-probability; None: no logprobs."""
        return None

    @field_validator("max_tokens", "max_completion_tokens")
    @classmethod
    def _within_limit(cls, v: int | None, info: ValidationInfo) -> int | None:
        top = (info.context or {}).get("limits", Limits()).max_tokens
        if info.field_name == "max_completion_tokens" and info.data.get("max_tokens") is not None:
            return v  # unused: max_tokens is the one that counts
        if v is not None and not 1 <= v <= top:
            raise ValueError(f"must be between 1 and {top}, got {v}")
        return v

    @field_validator("seed")
    @classmethod
    def _seed(cls, v: int | None) -> int | None:
        if v is not None and not SEED_MIN <= v <= SEED_MAX:
            raise ValueError(f"must be from {SEED_MIN} to {SEED_MAX}, got {v}")
        return v

    @field_validator("stop", mode="before")
    @classmethod
    def _stops(cls, v: Any) -> tuple[str, ...]:
        stops = [] if v is None else [v] if isinstance(v, str) else v
        if not isinstance(stops, list):
            raise ValueError("must be a string or a list of strings")
        if len(stops) > 4 or any(not isinstance(s, str) or not s for s in stops):
            raise ValueError("must be up to 4 non-empty strings")
        return tuple(_unicode(s) for s in stops)

    def params(self, limits: Limits) -> SamplingParams:
        max_tokens = self.max_tokens or self.max_completion_tokens or limits.default_max_tokens
        try:
            return SamplingParams(max_tokens=max_tokens, temperature=_or(self.temperature, 1.0),
                                  top_k=int(_or(self.top_k, 0)), top_p=_or(self.top_p, 1.0), seed=self.seed,
                                  stop=self.stop, ignore_eos=self.ignore_eos, min_p=_or(self.min_p, 0.0),
                                  presence_penalty=float(self.presence_penalty),
                                  frequency_penalty=float(self.frequency_penalty),
                                  repetition_penalty=_or(self.repetition_penalty, 1.0),
                                  logit_bias=tuple((int(t), float(b)) for t, b in self.logit_bias.items()),
                                  logprobs=self.logprob_count())
        except InvalidRequestError as e:
            raise bad(str(e)) from None


def choice_params(params: SamplingParams, index: int) -> SamplingParams:
    """Choice `index`'s parameters: with a seed, choice i draws from seed + i (wrapping within
    torch's range), so that choices differ from each other and each repeats."""
    if params.seed is None or index == 0:
        return params
    span = SEED_MAX - SEED_MIN + 1
    return dataclasses.replace(params, seed=(params.seed + index - SEED_MIN) % span + SEED_MIN)


def _or(value: float | None, default: float) -> float:
    return float(default if value is None else value)


class ChatRequest(_Completion):
    """POST /v1/chat/completions"""

    messages: list[Message] = Field(None, validate_default=True)
    logprobs: bool = False
    top_logprobs: int = 0
    tools: list[Tool] = []
    tool_choice: Any = None  # "none", "auto", "required" or {"type": "function", "function": {"name": ..}}
    parallel_tool_calls: bool = True

    @field_validator("tools")
    @classmethod
    def _distinct(cls, v: list[Tool]) -> list[Tool]:
        names = [t.function.name for t in v]
        if len(set(names)) < len(names):
            raise ValueError("must name each function once")
        return v

    @field_validator("tool_choice")
    @classmethod
    def _choice(cls, v: Any, info: ValidationInfo) -> str:
        if isinstance(v, dict):
            fn = v.get("function")
            if v.get("type") != "function" or not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise ValueError('must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}')
            v = fn["name"]
            if v not in [t.function.name for t in info.data.get("tools") or []]:
                raise ValueError(f"names function {v!r}, which is not one of the request's tools")
            return v
        if v not in ("none", "auto", "required"):
            raise ValueError(f'must be "none", "auto", "required" or a function, got {v!r}')
        if v == "required" and not info.data.get("tools"):
            raise ValueError('"required" needs tools to call')
        return v

    def tool_use(self) -> tuple[list[dict] | None, str | None]:
        """The tools the expert's template is given (None: none, or tool_choice "none") and
        what it must call: None (free to), "required" (a tool), or the one function named."""
        choice = self.tool_choice or "auto"
        if not self.tools or choice == "none":
            return None, None
        return [t.model_dump() for t in self.tools], None if choice == "auto" else choice

    @field_validator("top_logprobs")
    @classmethod
    def _top(cls, v: int, info: ValidationInfo) -> int:
        if not 0 <= v <= 20:
            raise ValueError(f"must be from 0 to 20, got {v}")
        if v and not info.data.get("logprobs"):
            raise ValueError("needs logprobs: true")
        return v

    def logprob_count(self) -> int | None:
        return self.top_logprobs if self.logprobs else None

    @field_validator("messages", mode="before")
    @classmethod
    def _some(cls, v: Any) -> Any:
        if not isinstance(v, list) or not v:
            raise ValueError("must be a non-empty list of {role, content}")
        return v


class CompletionRequest(_Completion):
    """POST /v1/completions: a prompt (text or token ids) or a list of them, each answered with
    `n` choices by the same expert."""

    prompt: Any = Field(None, validate_default=True)
    logprobs: int | None = None
    tools: Any = None  # not OpenAI's completions fields, but refused rather than ignored: a client
    tool_choice: Any = None  # that sends them here expects calls
    parallel_tool_calls: Any = None

    @field_validator("tools", "tool_choice")
    @classmethod
    def _chat_only(cls, v: Any) -> Any:
        if v not in ([], "none", "auto"):
            raise ValueError("is for /v1/chat/completions: a completion calls no tools")
        return v

    @field_validator("logprobs")
    @classmethod
    def _count(cls, v: int | None) -> int | None:
        if v is not None and not 0 <= v <= 5:
            raise ValueError(f"must be from 0 to 5, got {v}")
        return v

    def logprob_count(self) -> int | None:
        return self.logprobs

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompts(cls, v: Any) -> list[str | list[int]]:
        if isinstance(v, str) or _token_ids(v):
            v = [v]
        if not isinstance(v, list) or not v:
            raise ValueError("must be a string, a list of token ids, or a non-empty list of them")
        if len(v) > MAX_PROMPTS:
            raise ValueError(f"may hold at most {MAX_PROMPTS} prompts, got {len(v)}")
        out: list[str | list[int]] = []
        for i, p in enumerate(v):
            where = f"[{i}] " if len(v) > 1 else ""
            if isinstance(p, str):
                try:
                    out.append(_unicode(p))
                except ValueError as e:
                    raise ValueError(f"{where}{e}") from None
            elif _token_ids(p):
                if min(p) < 0:
                    raise ValueError(f"{where}token ids must not be negative")
                out.append(list(p))
            else:
                raise ValueError(f"{where}must be a string or a non-empty list of token ids")
        return out

    @model_validator(mode="after")
    def _sequences(self) -> "CompletionRequest":
        if len(self.prompt) * self.n > MAX_CHOICES:
            raise ValueError(f"asks for {len(self.prompt)} prompts x n={self.n} choices: at most {MAX_CHOICES} "
                             "sequences a request")
        return self


def _token_ids(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(t, int) and not isinstance(t, bool) for t in v)


def parse_request(body: Any, chat: bool, limits: Limits) -> ParsedRequest:
    req = _validated(ChatRequest if chat else CompletionRequest, body, {"limits": limits})
    messages = [m.for_template() for m in req.messages] if chat else None
    tools, must_call = req.tool_use() if chat else (None, None)
    if not chat and req.model == ROUTED and any(isinstance(p, list) for p in req.prompt):
        raise bad("a prompt of token ids needs an expert's name as 'model' (token ids belong to its "
                  "tokenizer): the router reads text", "prompt")
    try:
        grammar = grammar_for(req.response_format) if req.response_format else None
    except ValueError as e:
        raise bad(f"'response_format' {e}", "response_format") from None
    if must_call is not None and grammar is not None:
        raise bad("'response_format' cannot go with a tool_choice that must call: the answer is the call",
                  "response_format")
    if (grammar is not None or must_call is not None) and req.ignore_eos:
        raise bad("'ignore_eos' cannot go with a response_format or a required tool call: the answer ends "
                  "when its JSON is whole", "ignore_eos")
    return ParsedRequest(req.model, messages, None if chat else req.prompt, req.params(limits), req.stream,
                         bool(req.stream_options.get("include_usage")),
                         frozenset(k for k in SAMPLING_DEFAULTS if getattr(req, k) is None), req.n, grammar,
                         tools, must_call, req.parallel_tool_calls is not False)


class RouteBody(_Wire):
    """POST /v1/route"""
    prompt: str

    _text = field_validator("prompt")(_unicode)


def parse_route(body: Any) -> RouteBody:
    return _validated(RouteBody, body)


class _Admin(_Wire):
    """A body of coeflow's own admin routes: no field OpenAI might add, so unknown ones are errors."""

    model_config = ConfigDict(extra="forbid", strict=True)


class LoadBody(_Admin):
    """POST /v1/experts/NAME/load"""
    tier: Literal["host", "device"] = "device"


class UnloadBody(_Admin):
    """POST /v1/experts/NAME/unload: to disk unless told otherwise (frees both tiers)."""
    tier: Literal["host", "disk"] = "disk"


class PinBody(_Admin):
    """POST /v1/experts/NAME/pin"""
    pinned: bool = True


ADMIN_BODIES: dict[str, type[_Admin]] = {"load": LoadBody, "unload": UnloadBody, "pin": PinBody}


def parse_admin(action: str, body: Any) -> _Admin:
    """The body of an admin action; an unknown action is a 404."""
    if action not in ADMIN_BODIES:
        raise APIError(404, f"unknown action {action!r}: use {', '.join(ADMIN_BODIES)}")
    return _validated(ADMIN_BODIES[action], body)


def _validated(model: type[_ModelT], body: Any, context: dict | None = None) -> _ModelT:
    """`body` as `model`, or a 400 naming what is wrong."""
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object")
    try:
        return model.model_validate(body, context=context)
    except ValidationError as e:
        raise validation_error(e) from None
