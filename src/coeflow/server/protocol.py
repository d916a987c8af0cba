"""The OpenAI wire format: request validation with messages that say what to fix, and the
error shape every OpenAI client understands."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coeflow.engine import InvalidRequestError, SamplingParams

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


@dataclass
class Limits:
    max_tokens: int = 2048  # per request
    max_prompt_tokens: int = 8192
    default_max_tokens: int = 256


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


def _get(body: dict, key: str, types: tuple[type, ...], default: Any = None, what: str = "") -> Any:
    if key not in body or body[key] is None:
        return default
    value = body[key]
    if isinstance(value, bool) and bool not in types:
        raise bad(f"'{key}' must be {what}, got a boolean", key)
    if not isinstance(value, types):
        raise bad(f"'{key}' must be {what}, got {type(value).__name__}", key)
    return value


def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # [{"type": "text", "text": ...}, ...]
        parts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad(f"{where}: only text content parts are supported", "messages")
            parts.append(part["text"])
        return "".join(parts)
    raise bad(f"{where}: 'content' must be a string or a list of text parts", "messages")


def parse_request(body: Any, chat: bool, limits: Limits) -> ParsedRequest:
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object")
    model = _get(body, "model", (str,), what="a string")
    if not model:
        raise bad("'model' is required: an expert's name, or 'coe' to let the router choose", "model")
    messages, prompt = None, None
    if chat:
        raw = body.get("messages")
        if not isinstance(raw, list) or not raw:
            raise bad("'messages' must be a non-empty list of {role, content}", "messages")
        messages = []
        for i, m in enumerate(raw):
            if not isinstance(m, dict) or m.get("role") not in ROLES:
                raise bad(f"messages[{i}]: 'role' must be one of {', '.join(ROLES)}", "messages")
            messages.append({"role": m["role"], "content": _content(m.get("content"), f"messages[{i}]")})
    else:
        raw = body.get("prompt")
        if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], str):
            raw = raw[0]
        if not isinstance(raw, str):
            raise bad("'prompt' must be a string (one prompt per request)", "prompt")
        prompt = raw
    n = _get(body, "n", (int,), 1, "an integer")
    if n != 1:
        raise bad("'n' must be 1: coeflow returns one choice per request", "n")
    for key in ("presence_penalty", "frequency_penalty"):
        if _get(body, key, (int, float), 0, "a number"):
            raise bad(f"'{key}' is not supported; leave it at 0", key)
    if body.get("logprobs") not in (None, False, 0):
        raise bad("'logprobs' is not supported", "logprobs")
    max_tokens = _get(body, "max_completion_tokens", (int,), None, "an integer")
    max_tokens = _get(body, "max_tokens", (int,), max_tokens, "an integer")
    if max_tokens is None:
        max_tokens = limits.default_max_tokens
    if max_tokens < 1 or max_tokens > limits.max_tokens:
        raise bad(f"'max_tokens' must be between 1 and {limits.max_tokens}, got {max_tokens}", "max_tokens")
    temperature = float(_get(body, "temperature", (int, float), 1.0, "a number"))
    if not 0 <= temperature <= 2:
        raise bad(f"'temperature' must be between 0 and 2, got {temperature}", "temperature")
    top_p = float(_get(body, "top_p", (int, float), 1.0, "a number"))
    if not 0 < top_p <= 1:
        raise bad(f"'top_p' must be in (0, 1], got {top_p}", "top_p")
    top_k = _get(body, "top_k", (int,), 0, "an integer")
    seed = _get(body, "seed", (int,), None, "an integer")
    stop = _get(body, "stop", (str, list), [], "a string or a list of strings")
    stop = [stop] if isinstance(stop, str) else stop
    if len(stop) > 4 or any(not isinstance(s, str) or not s for s in stop):
        raise bad("'stop' must be up to 4 non-empty strings", "stop")
    stream = _get(body, "stream", (bool,), False, "a boolean")
    opts = _get(body, "stream_options", (dict,), {}, "an object")
    try:
        params = SamplingParams(max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                seed=seed, stop=tuple(stop))
    except InvalidRequestError as e:
        raise bad(str(e)) from None
    return ParsedRequest(model, messages, prompt, params, stream, bool(opts.get("include_usage")))
