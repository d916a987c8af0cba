"""`coeflow quantize DIR --to int8|int4 --out DIR2`: a quantized copy of a checkpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

QUANTIZE_HELP = """\
Write a copy of a Hugging Face checkpoint (config.json, safetensors, tokenizer) whose linear
layers hold int8 or int4 weights, by round-to-nearest with symmetric scales (no calibration
data). The output is compressed-tensors' pack-quantized format, as vLLM, transformers and
llm-compressor read and write it (W8A16 / W4A16), so it loads there too; coeflow serves it
like any checkpoint (an expert's `path:` in a CoE file) and decodes from the packed weights, reading 1/2
(int8) or 1/4 (int4) of bf16's bytes a token. Embeddings and norms stay in the checkpoint's
dtype; so does the output head unless --lm-head. int4 takes one scale a group of 128 inputs
(--group-size), int8 one a row. How much quality it costs: `coeflow eval perplexity` on a CoE
naming the copy."""


def register(sub: argparse._SubParsersAction, help_text: str) -> None:
    p = sub.add_parser("quantize", help=help_text, description=QUANTIZE_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="DIR", help="the dense checkpoint directory to quantize")
    p.add_argument("--to", required=True, choices=["int8", "int4"], help="bits a weight")
    p.add_argument("--out", required=True, metavar="DIR2", help="a new (or empty) directory to write")
    p.add_argument("--group-size", type=int, default=None, metavar="N",
                   help="inputs sharing one scale, a multiple of 32 dividing every layer's inputs "
                        "(default: 128 for int4, a whole row for int8)")
    p.add_argument("--lm-head", action="store_true",
                   help="quantize the output head too (a large share of a small model's bytes; "
                        "costs more quality than the other layers)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from coeflow.model.checkpoint import checkpoint_files
    from coeflow.model.convert import quant_scheme, quantize_checkpoint
    scheme = quant_scheme(int(args.to.removeprefix("int")), args.group_size, args.lm_head)
    total = sum(f.stat().st_size for f in checkpoint_files(Path(args.model)))
    bar = _bar(total, "quantizing")
    try:
        out = quantize_checkpoint(args.model, args.out, scheme, progress=bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    size = sum(f.stat().st_size for f in checkpoint_files(out))
    print(f"wrote {out} ({scheme.name}): {size / 1e6:.1f} MB of weights, from {total / 1e6:.1f} MB "
          f"({total / size:.2f}x smaller)")
    return 0


def _bar(total: int, desc: str, unit: str = "B"):
    """A progress bar (over bytes read by default), where tqdm is installed and stderr is a terminal."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit=unit, unit_scale=unit == "B", desc=desc, disable=not sys.stderr.isatty())
