"""The `coeflow` command. Each sub-command lives in its own module and only parses and prints;
the work is done by the room it calls."""

from __future__ import annotations

import argparse
import importlib
import sys

from coeflow.errors import CoeflowError

# (module under coeflow.cli, one-line help). Each module defines `register(subparsers)`.
COMMANDS: list[tuple[str, str]] = [
    ("generate", "generate text with one expert checkpoint"),
    ("bench", "benchmarks: decode, switch, cache, serve, validate"),
    ("simulate", "cost a model or a CoE on modelled hardware (SN40L, DGX)"),
    ("hw", "hardware specs: list, show, probe this machine"),
    ("trace", "request traces: generate, stats, run against a server"),
    ("route", "show which expert the router picks for a prompt, and why"),
    ("router", "train or evaluate the router"),
    ("coe", "CoE files: the checksums of the experts' weights (hash)"),
    ("quantize", "write an int8 or int4 copy of a checkpoint (compressed-tensors format)"),
    ("delta", "write a fine-tune as a compressed delta from its base (1, 2, 4 or 8 bits)"),
    ("eval", "evaluations of the CoE (perplexity)"),
    ("demo", "build and serve the demo CoE"),
    ("serve", "serve a CoE behind an OpenAI-compatible HTTP endpoint"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coeflow",
        description="Composition of Experts: many whole expert LLMs behind one endpoint, "
        "a router, a tiered expert store, and a model of the SN40L and GPU servers.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS:
        try:
            module = importlib.import_module(f"coeflow.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"coeflow.cli.{name}":
                continue  # not built yet
            raise
        module.register(sub, help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CoeflowError as e:
        print(f"coeflow: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
