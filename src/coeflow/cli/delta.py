"""`coeflow delta DIR --base BASE --bits 1|2|4|8 --out DIR2`: a fine-tune stored as a delta."""

from __future__ import annotations

import argparse
from pathlib import Path

from coeflow.cli.quantize import _bar
from coeflow.errors import ConfigError

DELTA_HELP = """\
Write a fine-tune (DIR) as its difference from the checkpoint it was fine-tuned from (BASE),
compressed: at --bits 1, one sign bit a weight and one scale a row (as BitDelta does); at 2, 4
or 8, signed values in groups of --group-size inputs, each group's scale clipped to lower the
error. Every matrix (linear layers, embeddings, output head) is stored so; norms and biases
whole. The result is a checkpoint directory (config.json records BASE's path, relative to it,
and BASE's checksum) that coeflow loads as BASE plus the delta: named as an expert's `path:` in
a CoE file, it takes 1/16 (1 bit, from bf16) of the expert's bytes on disk and in the host
tier, its base is kept once in every tier, and a switch to it moves only the delta and rebuilds
the expert on the device. With --distill FILE (some of the fine-tune's own text), the scales
are then fitted for a few steps so that base + delta predicts the next token as the fine-tune
does on it (BitDelta's second stage; the packed bits do not change; it holds the fine-tune
and the base in float32, so it needs memory for two fp32 copies). How much quality it
costs: `coeflow eval perplexity` on a CoE naming it."""


def register(sub: argparse._SubParsersAction, help_text: str) -> None:
    p = sub.add_parser("delta", help=help_text, description=DELTA_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="DIR", help="the fine-tuned checkpoint directory")
    p.add_argument("--base", required=True, metavar="BASE",
                   help="the dense checkpoint DIR was fine-tuned from (same shapes)")
    p.add_argument("--bits", required=True, type=int, choices=[1, 2, 4, 8], help="bits a weight of the delta")
    p.add_argument("--out", required=True, metavar="DIR2", help="a new (or empty) directory to write")
    p.add_argument("--group-size", type=int, default=None, metavar="N",
                   help="inputs sharing one scale at 2, 4 or 8 bits, dividing every matrix's inputs "
                        "(default 128, else 64 or 32 where 128 does not divide; 1 bit takes one scale a row)")
    p.add_argument("--distill", metavar="FILE", default=None,
                   help="text the fine-tune was trained on (plain text, or JSONL lines with a \"text\" field): "
                        "distil the scales on it")
    p.add_argument("--distill-steps", type=int, default=None, metavar="N",
                   help="Adam steps of 8 windows of 128 tokens (default 100)")
    p.add_argument("--distill-lr", type=float, default=None, metavar="LR", help="learning rate (default 1e-4)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from coeflow.model.checkpoint import checkpoint_files
    from coeflow.model.convert import DISTILL_STEPS, delta_checkpoint
    from coeflow.model.delta import DeltaSpec
    total = sum(f.stat().st_size for f in checkpoint_files(Path(args.model)))
    text = _read_text(Path(args.distill)) if args.distill else None
    if args.distill_steps is not None and args.distill_steps < 1:
        raise ConfigError("--distill-steps must be >= 1")
    given = {k: v for k, v in (("distill_steps", args.distill_steps), ("distill_lr", args.distill_lr)) if v is not None}
    bar = _bar(total, "delta")
    steps = _bar(given.get("distill_steps", DISTILL_STEPS), "distilling", "step") if text is not None else None
    try:
        out = delta_checkpoint(args.model, args.base, args.out, args.bits, args.group_size,
                               progress=bar.update if bar else None, distill=text, **given,
                               distill_progress=(lambda step, kl: steps.update(1)) if steps else None)
    finally:
        for b in (bar, steps):
            if b:
                b.close()
    size = sum(f.stat().st_size for f in checkpoint_files(out))
    spec = DeltaSpec.of(out)
    assert spec is not None
    print(f"wrote {out} ({spec.name} from {spec.base}): {size / 1e6:.1f} MB of weights, from "
          f"{total / 1e6:.1f} MB ({total / size:.2f}x smaller)")
    return 0


def _read_text(path: Path) -> str:
    """A text file as it is, or the "text" fields of a JSONL file joined by blank lines."""
    import json
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--distill {path}: cannot read it ({e})") from None
    if path.suffix != ".jsonl":
        return raw
    texts = []
    for i, line in enumerate(raw.splitlines(), 1):
        if line.strip():
            try:
                texts.append(str(json.loads(line)["text"]))
            except (ValueError, KeyError, TypeError):
                raise ConfigError(f"--distill {path}:{i}: not a JSON object with a \"text\" field") from None
    return "\n\n".join(texts)

