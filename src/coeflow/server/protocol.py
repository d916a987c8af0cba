"""The OpenAI wire format: request bodies as pydantic models whose errors say what to fix, and
the error shape every OpenAI client understands.

Request bodies carry fields coeflow does not use (OpenAI defines many; SDKs send some by
default), so unknown fields are ignored. The ones that would change the answer and that
coeflow cannot honour (`n` > 1, penalties, `logprobs`) are refused by name instead. A field
sent as `null` means the field is not set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from coeflow.engine import InvalidRequestError, SamplingParams
from coeflow.engine.sampling import SEED_MAX, SEED_MIN
from coeflow.server.options import Limits
from coeflow.validation import field_path, problem

ROLES = ("system", "developer", "user", "assistant", "tool")


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
    messages: list[dict[str, str]] | None  # chat
    prompt: str | None  # completions
    params: SamplingParams
    stream: bool
    include_usage: bool

    @property
    def routing_text(self) -> str:
        """What the router reads: the user's words (the last user turn carries the intent)."""
        if self.prompt is not None:
            return self.prompt
        users = [m["content"] for m in self.messages or [] if m["role"] == "user"]
        return users[-1] if users else self.messages[-1]["content"]


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


class Message(_Wire):
    """One chat turn; `content` is a string or a list of text parts, joined."""

    role: str
    content: Any = Field(None, validate_default=True)

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


class _Completion(_Wire):
    """The fields chat and completions share."""

    model: str = Field("", validate_default=True)
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: Any = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None  # OpenAI's newer name; max_tokens wins when both are given
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # extension: 0 is off
    seed: int | None = None
    stop: Any = ()
    stream: bool = False
    stream_options: dict[str, Any] = {}
    ignore_eos: bool = False  # extension: generate max_tokens tokens whatever the model says

    @field_validator("model", mode="after")
    @classmethod
    def _named(cls, v: str) -> str:
        if not v:
            raise ValueError("is required: an expert's name, or 'coe' to let the router choose")
        return v

    @field_validator("n")
    @classmethod
    def _one(cls, v: int) -> int:
        if v != 1:
            raise ValueError("must be 1: coeflow returns one choice per request")
        return v

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, v: float) -> float:
        if v:
            raise ValueError("is not supported; leave it at 0")
        return v

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, v: Any) -> Any:
        if v not in (None, False, 0):
            raise ValueError("is not supported")
        return v

    @field_validator("max_tokens", "max_completion_tokens")
    @classmethod
    def _within_limit(cls, v: int | None, info: ValidationInfo) -> int | None:
        top = (info.context or {}).get("limits", Limits()).max_tokens
        if info.field_name == "max_completion_tokens" and info.data.get("max_tokens") is not None:
            return v  # unused: max_tokens is the one that counts
        if v is not None and not 1 <= v <= top:
            raise ValueError(f"must be between 1 and {top}, got {v}")
        return v

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, v: float) -> float:
        if not 0 <= v <= 2:
            raise ValueError(f"must be between 0 and 2, got {v}")
        return v

    @field_validator("top_p")
    @classmethod
    def _top_p(cls, v: float) -> float:
        if not 0 < v <= 1:
            raise ValueError(f"must be in (0, 1], got {v}")
        return v

    @field_validator("seed")
    @classmethod
    def _seed(cls, v: int | None) -> int | None:
        if v is not None and not SEED_MIN <= v <= SEED_MAX:
            raise ValueError(f"must be from {SEED_MIN} to {SEED_MAX}, got {v}")
        return v

    @field_validator("top_k")
    @classmethod
    def _top_k(cls, v: int) -> int:
        if v < 0:
            raise ValueError(f"must be 0 (off) or more, got {v}")
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
            return SamplingParams(max_tokens=max_tokens, temperature=float(self.temperature), top_k=self.top_k,
                                  top_p=float(self.top_p), seed=self.seed, stop=self.stop, ignore_eos=self.ignore_eos)
        except InvalidRequestError as e:
            raise bad(str(e)) from None


class ChatRequest(_Completion):
    """POST /v1/chat/completions"""

    messages: list[Message] = Field(None, validate_default=True)

    @field_validator("messages", mode="before")
    @classmethod
    def _some(cls, v: Any) -> Any:
        if not isinstance(v, list) or not v:
            raise ValueError("must be a non-empty list of {role, content}")
        return v


class CompletionRequest(_Completion):
    """POST /v1/completions: one prompt (a list holding one string is accepted too)."""

    prompt: Any = Field(None, validate_default=True)

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_prompt(cls, v: Any) -> str:
        if isinstance(v, list) and len(v) == 1:
            v = v[0]
        if not isinstance(v, str):
            raise ValueError("must be a string (one prompt per request)")
        return _unicode(v)


def parse_request(body: Any, chat: bool, limits: Limits) -> ParsedRequest:
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object")
    model = ChatRequest if chat else CompletionRequest
    try:
        req = model.model_validate(body, context={"limits": limits})
    except ValidationError as e:
        raise validation_error(e) from None
    messages = [{"role": m.role, "content": m.content} for m in req.messages] if chat else None
    return ParsedRequest(req.model, messages, None if chat else req.prompt, req.params(limits), req.stream,
                         bool(req.stream_options.get("include_usage")))


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
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object")
    try:
        return ADMIN_BODIES[action].model_validate(body)
    except ValidationError as e:
        raise validation_error(e) from None
