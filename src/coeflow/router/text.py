"""Turn whatever a caller hands the router (a string, raw bytes, chat messages) into the one
bounded string the encoders see. Every odd input has a defined outcome here, so the
encoders and classifiers never meet one."""

from __future__ import annotations

from typing import Any, Sequence

# The router reads at most this many characters: the first and the last half. A pasted
# megabyte of logs followed by a question is routed on its start and its question, in
# bounded time.
DEFAULT_MAX_CHARS = 2048


def prompt_text(prompt: Any, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """The text to route on: a str, bytes (invalid UTF-8 is replaced by U+FFFD), or an
    OpenAI-style list of messages (the last user message is used; content may be a string
    or a list of {"type": "text", "text": ...} parts). Returns "" when there is nothing."""
    if isinstance(prompt, (bytes, bytearray, memoryview)):
        text = bytes(prompt).decode("utf-8", errors="replace")
    elif isinstance(prompt, str):
        text = prompt
    elif isinstance(prompt, Sequence):
        text = _last_user_text(prompt)
    elif prompt is None:
        text = ""
    else:
        raise TypeError(f"cannot route a {type(prompt).__name__}; pass a string or a list of chat messages")
    text = _clean(text)
    if len(text) > max_chars:
        half = max_chars // 2
        text = text[:half] + " " + text[-half:]
    return text


def _last_user_text(messages: Sequence[Any]) -> str:
    """Route on the latest thing the user asked; fall back to the last message of any role."""
    chosen = None
    for m in messages:
        if isinstance(m, dict) and m.get("role") == "user":
            chosen = m
    if chosen is None and messages and isinstance(messages[-1], dict):
        chosen = messages[-1]
    if chosen is None:
        return ""
    content = chosen.get("content", "")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return "\n".join(parts)
    return ""


def _clean(text: str) -> str:
    # Strings from argv or os APIs may hold lone surrogates (undecodable bytes); make them
    # U+FFFD so that encoding to UTF-8 later cannot fail.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)
    return text.strip()
