"""`coeflow generate`: one expert checkpoint, one prompt, text out (streamed) or JSON."""

from __future__ import annotations

import argparse
import json
import sys
import time


def register(sub: argparse._SubParsersAction, help_text: str) -> None:
    p = sub.add_parser("generate", help=help_text, description=(
        "Generate text from a local Hugging Face checkpoint directory (config.json, "
        "safetensors weights, tokenizer.json). Streams text to stdout; --json prints one object."))
    p.add_argument("--model", required=True, metavar="DIR", help="checkpoint directory")
    p.add_argument("--prompt", required=True, help="prompt text")
    p.add_argument("--chat", action="store_true",
                   help="wrap the prompt as a user message in the checkpoint's chat template")
    p.add_argument("--max-tokens", type=int, default=64, metavar="N", help="tokens to generate (default 64)")
    p.add_argument("--temperature", type=float, default=0.0, metavar="T",
                   help="sampling temperature; 0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0, metavar="K", help="sample among the K likeliest (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, metavar="P", help="nucleus sampling mass (default 1.0)")
    p.add_argument("--seed", type=int, default=None, help="seed for sampling (reproducible output)")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="stop when this text appears (repeatable); it is not included in the output")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="weight dtype (default fp32)")
    p.add_argument("--device", default="auto", help="auto (cuda if present, else cpu), cpu, cuda, cuda:N")
    p.add_argument("--engine", default="fused", choices=["fused", "eager"],
                   help="fused: compiled decode step (torch.compile; CUDA graphs on GPU; compiles on "
                        "first use, cached on disk afterwards); eager: plain PyTorch (default fused)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: text, token_ids, finish_reason, usage, timings")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from coeflow.engine import Engine, SamplingParams
    from coeflow.model import Tokenizer
    params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k,
                            top_p=args.top_p, seed=args.seed, stop=tuple(args.stop))
    t0 = time.perf_counter()
    engine = Engine.from_checkpoint(args.model, dtype=args.dtype, device=args.device,
                                    fused=args.engine == "fused")
    load_s = time.perf_counter() - t0
    tok = Tokenizer.from_dir(args.model)
    ids = tok.encode_chat([{"role": "user", "content": args.prompt}]) if args.chat else tok.encode(args.prompt)
    eos = tok.eos_ids  # generation_config.json, config.json and tokenizer_config.json
    if args.json:
        c = engine.generate([ids], params, eos, tok.decode)[0]
        print(json.dumps({
            "text": c.text, "token_ids": c.token_ids, "finish_reason": c.finish_reason,
            "usage": {"prompt_tokens": c.prompt_tokens, "completion_tokens": len(c.token_ids)},
            "timings": {"load_s": load_s, "prefill_s": c.prefill_s, "decode_s": c.decode_s},
            "engine": "fused" if engine.fused else "eager", "dtype": args.dtype,
            "device": str(engine.device)}))
        return 0
    if args.engine == "fused" and sys.stderr.isatty():
        print("(compiling the decode step on first use; cached for later runs)", file=sys.stderr)
    for deltas in engine.stream([ids], params, eos, tok.decode):
        sys.stdout.write(deltas[0].text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0
