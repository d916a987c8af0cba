"""The CoE file: one YAML manifest naming the experts of a Composition of Experts, the
fallback expert, and where the trained router lives. The router, the store and the server
all read it through `load_coe`, so every check on it lives here, once: pydantic models
check the file's shape (an unknown key is an error, and nothing is coerced), then paths and
the rules that span entries (unique names, the fallback) are checked against the file's
directory.

Shape (paths are relative to the CoE file's directory and may not leave it):

    name: demo
    fallback: general            # expert used when the router is unsure
    router: router/              # directory of the trained router (optional)
    experts:
      - name: python
        path: experts/python     # Hugging Face checkpoint directory
        description: Python code
        examples: ["write a python function that ..."]
        pin: false               # optional: keep resident in the store
        priority: 0              # optional: higher is evicted later
        ttl_s: 300.0             # optional: unload after this long idle
        sha256: <64 hex digits>  # optional: of the weights, checked on each load (coeflow coe hash)
        sampling: {temperature: 0.7, top_p: 0.9}  # optional: defaults for requests that leave them
                                 # unset, over the checkpoint's generation_config.json
        chat_template: templates/python.jinja  # optional: instead of the checkpoint's own
        max_context: 2048        # optional: tokens of prompt + output, below the checkpoint's own
        tool_call_format: hermes # optional: how it writes tool calls (hermes, llama3_json, mistral);
                                 # unset: read from its chat template's markers
        dtype: bf16              # optional: auto (its checkpoint's own), fp32, bf16 or fp16;
                                 # unset: coeflow serve --dtype
        quantize: int4           # optional: int8 or int4 (as `coeflow quantize` writes it, made
                                 # once into coeflow's cache), none (default) serves it as it is
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import yaml
from pydantic import ValidationError, field_validator

from coeflow.errors import ConfigError
from coeflow.sampling_ranges import RANGES
from coeflow.validation import FileModel, Loc, field_path, file_error

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
DEFAULT_ROUTER_DIR = "router"


@dataclass(frozen=True)
class ExpertSpec:
    """One expert of the CoE; `path` is already resolved to an absolute path."""

    name: str
    path: Path
    description: str = ""
    examples: tuple[str, ...] = ()
    pin: bool = False
    priority: int = 0
    ttl_s: float | None = None
    sha256: str | None = None  # of the checkpoint's safetensors files (coeflow coe hash)
    sampling: tuple[tuple[str, float], ...] = ()  # defaults for requests that leave these unset
    chat_template: Path | None = None  # a Jinja file used instead of the checkpoint's template
    max_context: int | None = None  # prompt + output tokens a request may take, if below the checkpoint's
    tool_call_format: str | None = None  # hermes, llama3_json or mistral; None: as its chat template shows
    dtype: str | None = None  # auto, fp32, bf16 or fp16; None: the server's --dtype
    quantize: int | None = None  # bits (8 or 4) of a copy served instead (coeflow.model.convert); None: as it is


@dataclass(frozen=True)
class CoEFile:
    """A loaded, checked CoE file. `source` is the file it came from."""

    name: str
    fallback: str
    router_dir: Path
    experts: tuple[ExpertSpec, ...]
    source: Path
    root: Path = field(default=Path("."))

    @property
    def expert_names(self) -> list[str]:
        return [e.name for e in self.experts]

    def expert(self, name: str) -> ExpertSpec:
        for e in self.experts:
            if e.name == name:
                return e
        raise ConfigError(f"{self.source}: no expert named {name!r} (known: {', '.join(self.expert_names)})")


def is_safe_name(name: str) -> bool:
    """Names end up in paths, URLs and metric labels: keep them to a boring charset."""
    return bool(NAME_PATTERN.fullmatch(name)) and ".." not in name


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must be a non-empty string")
    return value.strip()


def _safe(value: str) -> str:
    value = _non_empty(value)
    if not is_safe_name(value):
        raise ValueError(f"{value!r} must match [A-Za-z0-9][A-Za-z0-9._-]* and not contain '..'")
    return value


class _Sampling(FileModel):
    """An expert's sampling defaults, for the requests that leave a field unset; over the
    values of its checkpoint's generation_config.json."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None

    @field_validator("*")  # every field is a sampling parameter with a range
    @classmethod
    def _in_range(cls, v: float | None, info) -> float | None:
        why = RANGES[info.field_name].problem(v) if v is not None else None
        if why:
            raise ValueError(why)
        return v


SAMPLING_DEFAULTS = tuple(_Sampling.model_fields)  # the sampling fields an expert may set defaults for


class _ExpertEntry(FileModel):
    """One entry of `experts:` as written; `path` is still relative."""

    name: str
    path: str
    description: str | None = ""
    examples: list[str] | None = None
    pin: bool = False
    priority: int = 0  # higher is evicted later
    ttl_s: float | None = None
    sha256: str | None = None
    sampling: _Sampling | None = None
    chat_template: str | None = None  # a file, relative to the CoE file
    max_context: int | None = None
    tool_call_format: Literal["hermes", "llama3_json", "mistral"] | None = None
    dtype: Literal["auto", "fp32", "bf16", "fp16"] | None = None
    quantize: Literal["int8", "int4", "none"] | None = None

    _name = field_validator("name")(_safe)
    _path = field_validator("path")(_non_empty)

    @field_validator("max_context")
    @classmethod
    def _some_tokens(cls, v: int | None) -> int | None:
        if v is not None and v < 16:
            raise ValueError("must be at least 16 tokens")
        return v

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, v: str | None) -> str | None:
        if v is not None and not SHA256_PATTERN.fullmatch(v.strip().lower()):
            raise ValueError("must be 64 hexadecimal digits (a sha256 digest, as `coeflow coe hash` writes it)")
        return v.strip().lower() if v is not None else None

    @field_validator("ttl_s")
    @classmethod
    def _positive(cls, v: float | None) -> float | None:
        if v is not None and not v > 0:
            raise ValueError("must be a positive number of seconds")
        return v


class _CoEDocument(FileModel):
    """The CoE file as written. Checks that need the file's location (paths) or span
    entries (unique names, the fallback) are made by `parse_coe` after this."""

    name: str
    fallback: str
    router: str = DEFAULT_ROUTER_DIR
    experts: list[_ExpertEntry]

    _name = field_validator("name")(_safe)
    _fallback = field_validator("fallback")(_non_empty)
    _router = field_validator("router")(_non_empty)

    @field_validator("experts")
    @classmethod
    def _some(cls, v: list[_ExpertEntry]) -> list[_ExpertEntry]:
        if not v:
            raise ValueError("must be a non-empty list")
        return v


def load_coe(path: str | Path) -> CoEFile:
    """Read and check a CoE file; raise ConfigError naming the file, entry and field."""
    source = Path(path)
    if source.is_dir():
        source = source / "coe.yaml"
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: CoE file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{source}: cannot read CoE file: {e}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from None
    return parse_coe(doc, source)


def parse_coe(doc: Any, source: Path) -> CoEFile:
    """Check an already-parsed document; `source` locates relative paths and error messages."""
    source = Path(source)
    root = source.parent.resolve()
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: the CoE file must be a mapping with 'name', 'fallback' and 'experts'")
    try:
        parsed = _CoEDocument.model_validate(doc)
    except ValidationError as e:
        raise file_error(e, source, _CoEDocument, label=_labeller(doc)) from None
    experts: list[ExpertSpec] = []
    for i, entry in enumerate(parsed.experts):
        where = f"experts[{i}] ({entry.name})"
        if entry.name in (e.name for e in experts):
            raise ConfigError(f"{source}: {where}: 'name' is used by an earlier expert")
        experts.append(ExpertSpec(
            name=entry.name, path=_resolve_inside(entry.path, root, source, where, "path"),
            description=entry.description or "", examples=tuple(entry.examples or ()), pin=entry.pin,
            priority=entry.priority, ttl_s=entry.ttl_s, sha256=entry.sha256,
            sampling=tuple((k, v) for k, v in (entry.sampling.model_dump() if entry.sampling else {}).items()
                           if v is not None),
            chat_template=(_resolve_inside(entry.chat_template, root, source, where, "chat_template")
                           if entry.chat_template else None),
            max_context=entry.max_context, tool_call_format=entry.tool_call_format, dtype=entry.dtype,
            quantize=int(entry.quantize[3:]) if entry.quantize not in (None, "none") else None))
    names = [e.name for e in experts]
    if parsed.fallback not in names:
        raise ConfigError(f"{source}: 'fallback' {parsed.fallback!r} is not one of the experts "
                          f"({', '.join(sorted(names))})")
    router_dir = _resolve_inside(parsed.router, root, source, "", "router")
    return CoEFile(name=parsed.name, fallback=parsed.fallback, router_dir=router_dir, experts=tuple(experts),
                   source=source, root=root)


def _labeller(doc: dict) -> Callable[[Loc], str]:
    """Names an expert entry by its index and, when it has one, its name: "experts[0] (python)"."""
    def label(loc: Loc) -> str:
        if len(loc) < 2 or loc[0] != "experts" or not isinstance(loc[1], int):
            return field_path(loc)
        entry = doc["experts"][loc[1]]
        name = entry.get("name") if isinstance(entry, dict) else None
        head = f"experts[{loc[1]}]" + (f" ({name.strip()})" if isinstance(name, str) and name.strip() else "")
        rest = field_path(loc[2:])
        return f"{head}: {rest}" if rest else head
    return label


def _resolve_inside(rel: str, root: Path, source: Path, where: str, key: str) -> Path:
    """Resolve a relative path and refuse anything that lands outside the CoE's directory."""
    at = f"{source}: {where}: " if where else f"{source}: "
    p = Path(rel)
    if p.is_absolute():
        raise ConfigError(f"{at}'{key}' {rel!r} must be relative to the CoE file's directory")
    resolved = (root / p).resolve()
    if resolved != root and root not in resolved.parents:
        raise ConfigError(f"{at}'{key}' {rel!r} leads outside the CoE file's directory {root}")
    return resolved


def write_sha256(source: Path, digests: dict[str, str]) -> None:
    """Set the `sha256` of the named experts in the CoE file `source`, changing nothing else
    in it: the new values are spliced into the text (comments, order and quoting stay), the
    result is checked to read back as the same document with those values, then it replaces
    the file in one rename."""
    with open(source, encoding="utf-8", newline="") as f:  # keep its line endings
        text = f.read()
    new = _splice_sha256(text, digests, source)
    want = yaml.safe_load(text)
    for entry in want["experts"]:
        if str(entry["name"]).strip() in digests:
            entry["sha256"] = digests[str(entry["name"]).strip()]
    if yaml.safe_load(new) != want:
        raise ConfigError(f"{source}: cannot add the checksums without changing something else in the file; "
                          "add each expert's `sha256:` by hand")
    parse_coe(want, source)
    fd, tmp = tempfile.mkstemp(dir=source.parent, prefix=f".{source.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(new)
        os.chmod(tmp, source.stat().st_mode & 0o7777)
        os.replace(tmp, source)
    except BaseException:
        os.unlink(tmp)
        raise


def _splice_sha256(text: str, digests: dict[str, str], source: Path) -> str:
    """`text` with each named expert's sha256 replaced, or added just after its `path` (on a
    line of its own in a block entry, inline in a `{...}` one). PyYAML's node marks say where
    each value lies in the text."""
    root = yaml.compose(text)
    experts = next((v for k, v in root.value if k.value == "experts"), None) if root else None
    if not isinstance(experts, yaml.SequenceNode):
        raise ConfigError(f"{source}: no 'experts' list to write checksums into")
    edits: list[tuple[int, int, str]] = []  # (start, end, replacement) in text
    eol = "\r\n" if "\r\n" in text else "\n"
    for entry in experts.value:
        pairs = {k.value: (k, v) for k, v in entry.value}
        digest = digests.get(pairs["name"][1].value.strip())
        if digest is None:
            continue
        value = f'"{digest}"' if digest.isdigit() else digest  # all digits would read as a number
        if "sha256" in pairs:
            old = pairs["sha256"][1]
            start, end = old.start_mark.index, old.end_mark.index
            edits.append((start, end, value if end > start else f" {value}"))
        elif entry.flow_style:
            at = pairs["path"][1].end_mark.index
            edits.append((at, at, f", sha256: {value}"))
        else:
            key, path = pairs["path"]
            newline = text.find("\n", path.end_mark.index)
            at = len(text) if newline < 0 else newline + 1
            line = " " * key.start_mark.column + f"sha256: {value}" + eol
            edits.append((at, at, line if newline >= 0 else eol + line))
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text
