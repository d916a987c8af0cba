"""Pydantic's validation errors in words a user can act on. The server's OpenAI errors and the
YAML files' ConfigErrors phrase a bad field the same way: its path (`messages[0].role`,
`memory.hbm.capacity`) and what it must be ("must be an integer, got a string")."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Callable, Union

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from coeflow.errors import ConfigError

Loc = tuple[Union[int, str], ...]


class FileModel(BaseModel):
    """A section of a YAML file coeflow reads: an unknown key is an error (most often a
    typo that would otherwise be silently ignored), and values are not coerced ("yes" is
    not a boolean, 1.5 is not an integer)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


_EXPECTED = {"int_type": "an integer", "int_from_float": "an integer", "float_type": "a number",
             "bool_type": "true or false", "string_type": "a string", "list_type": "a list",
             "dict_type": "a mapping", "model_type": "a mapping"}


def field_path(loc: Loc) -> str:
    """("messages", 0, "role") -> "messages[0].role"."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def kind_of(value: Any, mapping: str = "a mapping") -> str:
    """What a JSON or YAML value is, in words: "a string", "a number", "null"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return mapping
    return type(value).__name__


def problem(err: ErrorDetails, mapping: str = "a mapping") -> str:
    """What is wrong with one field, phrased to follow its name: "must be an integer, got a
    string". Our own validators raise ValueError with such a phrase."""
    kind = err["type"]
    if kind == "missing":
        return "is required"
    if kind in ("value_error", "assertion_error"):
        return str(err["ctx"]["error"])
    if kind == "literal_error":
        return f"must be {err['ctx']['expected']}, got {err['input']!r}"
    if kind in _EXPECTED:
        expected = mapping if _EXPECTED[kind] == "a mapping" else _EXPECTED[kind]
        return f"must be {expected}, got {kind_of(err['input'], mapping)}"
    return err["msg"][:1].lower() + err["msg"][1:]  # pydantic's own words for the rarer cases


def allowed_keys(model: type[BaseModel], loc: Loc) -> list[str]:
    """The keys the model accepts at `loc` (the mapping that holds a bad key), for the
    "unknown field" message; [] where the walk cannot tell."""
    node: Any = model
    for part in loc:
        node = _inner(node)
        if isinstance(node, type) and issubclass(node, BaseModel) and isinstance(part, str):
            if part not in node.model_fields:
                return []
            node = node.model_fields[part].annotation
        elif typing.get_origin(node) in (list, tuple) and isinstance(part, int):
            node = typing.get_args(node)[0]
        elif typing.get_origin(node) is dict:
            node = typing.get_args(node)[1]
        else:
            return []
    node = _inner(node)
    return sorted(node.model_fields) if isinstance(node, type) and issubclass(node, BaseModel) else []


def _inner(annotation: Any) -> Any:
    """`X | None` -> X."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def file_error(e: ValidationError, source: str | Path, model: type[BaseModel],
               label: Callable[[Loc], str] | None = None) -> ConfigError:
    """One ConfigError for every problem of a YAML file, a line each, naming the file and the
    field. A field is named by its whole path ('memory.hbm.capacity'), or, given `label`,
    by its key after a label of the mapping that holds it (the CoE file names its experts:
    "experts[0] (python): 'pin' ...")."""
    lines = []
    for err in e.errors():
        loc = tuple(err["loc"])
        parent, key = (loc[:-1], str(loc[-1])) if loc and isinstance(loc[-1], str) else (loc, "")
        place = label(parent) if label else ""
        name = key if label else field_path(loc)
        if err["type"] == "extra_forbidden":
            allowed = allowed_keys(model, parent)
            what = f"unknown field {name!r}" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
        else:
            what = f"{name!r} {problem(err)}" if name else problem(err)
        lines.append(f"{source}: {place}: {what}" if place else f"{source}: {what}")
    return ConfigError("\n".join(lines))
