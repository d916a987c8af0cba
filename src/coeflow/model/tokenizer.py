"""Tokenizer and chat template of a checkpoint: tokenizer.json through the `tokenizers`
library, the chat template from tokenizer_config.json (jinja2, sandboxed), EOS ids from
every place Hugging Face checkpoints put them."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer as HFTokenizer

from coeflow.errors import CheckpointError, CoeflowError

Message = dict[str, Any]


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):  # {"content": "</s>", ...} in older tokenizer_config files
        return value.get("content")
    return value


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


@dataclass
class Tokenizer:
    tok: HFTokenizer
    bos_token: str | None = None
    eos_token: str | None = None
    chat_template: str | None = None
    eos_ids: set[int] = field(default_factory=set)

    @classmethod
    def from_dir(cls, path: str | Path) -> "Tokenizer":
        path = Path(path)
        file = path / "tokenizer.json"
        if not file.is_file():
            raise CheckpointError(f"{file}: missing; coeflow reads tokenizer.json (the fast tokenizer)")
        try:
            tok = HFTokenizer.from_file(str(file))
        except Exception as e:
            raise CheckpointError(f"{file}: cannot load tokenizer ({e})") from None
        tcfg = _read_json(path / "tokenizer_config.json")
        template = tcfg.get("chat_template")
        if isinstance(template, list):  # named templates: take "default"
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        if template is None and (path / "chat_template.jinja").is_file():
            template = (path / "chat_template.jinja").read_text()
        bos, eos = _token_text(tcfg.get("bos_token")), _token_text(tcfg.get("eos_token"))
        eos_ids: set[int] = set()
        for src in (_read_json(path / "generation_config.json"), _read_json(path / "config.json")):
            v = src.get("eos_token_id")
            eos_ids.update(v if isinstance(v, list) else [] if v is None else [v])
        if eos is not None and tok.token_to_id(eos) is not None:
            eos_ids.add(tok.token_to_id(eos))
        return cls(tok, bos, eos, template, {int(i) for i in eos_ids})

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    @functools.cached_property
    def max_token_chars(self) -> int:
        """The longest token's length in characters: no token stands for more characters of a
        text, so a text's length bounds its token count from below without encoding it."""
        return max((len(t) for t in self.tok.get_vocab()), default=1)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids; `add_special_tokens` applies tokenizer.json's post-processor (e.g. BOS)
        exactly as `transformers` does for a plain prompt."""
        return self.tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    def apply_chat_template(self, messages: list[Message], add_generation_prompt: bool = True,
                            tools: list[dict] | None = None) -> str:
        """`tools`: JSON schemas of functions ({"type": "function", "function": {..}}), given to
        the template as transformers gives them."""
        if not self.chat_template:
            lines = [f"{m['role']}: {m['content']}" for m in messages]
            return "\n".join(lines) + ("\nassistant:" if add_generation_prompt else "")
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        env.filters["tojson"] = _tojson
        try:
            return env.from_string(self.chat_template).render(
                messages=messages, add_generation_prompt=add_generation_prompt, tools=tools,
                bos_token=self.bos_token or "", eos_token=self.eos_token or "")
        except TemplateError as e:
            raise CoeflowError(f"chat template failed: {e}") from None

    def encode_chat(self, messages: list[Message], tools: list[dict] | None = None) -> list[int]:
        """The template writes its own special tokens (as transformers does), so none are added."""
        if not self.chat_template:
            return self.encode(self.apply_chat_template(messages))
        return self.encode(self.apply_chat_template(messages, tools=tools), add_special_tokens=False)


def _raise(message: str) -> None:
    raise TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    """JSON as templates written for transformers expect it: jinja2's own filter escapes <, >,
    & and ' for HTML, which would change the tools and calls a model reads."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
