"""The vocabulary of the demo router's generated prompts, broad rather than deep.

A router trained on a few hundred phrases per domain learns those phrases; a user then
asks about `__slots__` or `wget --mirror` and the router has never seen the word. So each
domain lists what it is *about*, as widely as a page of text can. The lists are data files
under `data/prompts/<domain>/` (keywords, commands, terms, topics, tasks, errors); Python's
names are also mined from the running interpreter (keywords, builtins, dunder names, the
public functions of common modules, and the first lines of their docstrings as tasks).
None of this is taken from the held-out prompt sets."""

from __future__ import annotations

import builtins
import collections.abc
import importlib
import keyword
import re
import sys
import types

from coeflow.demo.datafiles import read_json, read_list


def words(domain: str, name: str) -> list[str]:
    """One vocabulary list: `data/prompts/<domain>/<name>.txt`."""
    return read_list(f"prompts/{domain}/{name}.txt")


def _public_callables(modname: str) -> list[tuple[str, object]]:
    try:
        mod = importlib.import_module(modname)
    except Exception:  # a module missing on this platform (e.g. no _ssl): skip it
        return []
    names = getattr(mod, "__all__", None) or [n for n in dir(mod) if not n.startswith("_")]
    out = []
    for n in sorted(set(names)):
        obj = getattr(mod, n, None)
        if callable(obj) and not isinstance(obj, types.ModuleType):
            out.append((f"{modname}.{n}", obj))
    return out


def _doc_task(obj: object, verbs: dict[str, str]) -> str | None:
    """'Return the absolute version of a path.' -> 'get the absolute version of a path'
    (`verbs` maps a docstring's first word to the verb a user would ask with)."""
    doc = getattr(obj, "__doc__", None)
    if not isinstance(doc, str):
        return None
    first = doc.strip().split("\n\n")[0].replace("\n", " ")
    first = re.split(r"(?<=[a-z)])\. ", first)[0].rstrip(".").strip()
    parts = first.split()
    if not 4 <= len(parts) <= 14 or not parts[0].isalpha() or any(ch in first for ch in "<>{}=@"):
        return None
    verb = verbs.get(parts[0].lower())
    if verb is None:
        return None
    return " ".join([verb] + parts[1:])


def python_names() -> dict[str, list[str]]:
    """Names and tasks mined from this interpreter. Deterministic for a Python version."""
    mods = sorted(m for m in sys.stdlib_module_names if not m.startswith("_"))
    bnames = sorted(n for n in dir(builtins) if not n.startswith("_"))
    excs = [n for n in bnames if isinstance(getattr(builtins, n), type) and issubclass(getattr(builtins, n), BaseException)]
    funcs = [n for n in bnames if callable(getattr(builtins, n)) and n not in excs]
    methods = [f"{t.__name__}.{m}" for t in (str, list, dict, set, bytes, int, float, tuple)
               for m in dir(t) if not m.startswith("_")]
    dunders = set(words("python", "extra_dunders"))
    for t in (object, int, float, list, dict, str, type, types.FunctionType):
        dunders.update(n for n in dir(t) if n.startswith("__") and n.endswith("__"))
    for abc_name in collections.abc.__all__:
        dunders.update(n for n in vars(getattr(collections.abc, abc_name)) if n.startswith("__") and n.endswith("__")
                       and not n.startswith(("__abstract", "__slotnames")))
    dunders -= {"__weakref__", "__subclasshook__", "__abstractmethods__", "__dictoffset__", "__weakrefoffset__",
                "__basicsize__", "__itemsize__", "__flags__", "__text_signature__", "__getstate__"}
    verbs = read_json("prompts/python/doc_verbs.json")
    qualified, doc_tasks = [], []
    seen_docs: set[str] = set()
    for m in words("python", "common_modules"):
        for name, obj in _public_callables(m):
            qualified.append(name)
            task = _doc_task(obj, verbs)
            if task and task.lower() not in seen_docs:
                seen_docs.add(task.lower())
                doc_tasks.append(task)
    return {
        "modules": mods, "builtins": funcs, "exceptions": excs, "methods": methods,
        "keywords": sorted(set(keyword.kwlist) | set(keyword.softkwlist) - {"_"}),
        "dunders": sorted(dunders), "qualified": qualified, "doc_tasks": doc_tasks,
    }
