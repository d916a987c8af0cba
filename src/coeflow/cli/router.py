"""`coeflow router train|eval`: train the router of a CoE from its example prompts and/or
JSONL files, and measure it on labelled prompts."""

from __future__ import annotations

import argparse
import json

from coeflow.coefile import load_coe
from coeflow.errors import ConfigError
from coeflow.router import (
    evaluate_router,
    examples_from_coe,
    load_router_for_coe,
    make_encoder,
    read_jsonl,
    train_router,
)


def register(sub: argparse._SubParsersAction, help_text: str) -> None:
    p = sub.add_parser("router", help=help_text, description=help_text)
    rsub = p.add_subparsers(dest="router_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    t = rsub.add_parser("train", help="train and calibrate the router; saved in the CoE's router directory",
                        description="Train the router from the CoE file's example prompts and/or JSONL files of "
                        '{"prompt": ..., "expert": ...}; calibrate it by cross-validation; save it next to the CoE.')
    t.add_argument("--coe", required=True, help="the CoE file (coe.yaml)")
    t.add_argument("--data", action="append", default=[], metavar="FILE.jsonl",
                   help="labelled prompts, one JSON object per line (repeatable)")
    t.add_argument("--no-examples", action="store_true", help="ignore the example prompts in the CoE file")
    t.add_argument("--classifier", choices=["linear", "knn"], default="linear", help="default: linear")
    t.add_argument("--encoder", choices=["hashing", "sentence-transformers", "llama"], default="hashing",
                   help="hashing (default, no weights), a local sentence-transformers model, or mean-pooled "
                   "hidden states of a local Llama-family checkpoint")
    t.add_argument("--encoder-path", help="model directory for the sentence-transformers or llama encoder")
    g = t.add_mutually_exclusive_group()
    g.add_argument("--threshold", type=float, help="fall back below this calibrated confidence (default 0.5)")
    g.add_argument("--target-accuracy", type=float, help="pick the threshold reaching this out-of-fold accuracy")
    g.add_argument("--target-coverage", type=float, help="pick the threshold deciding this share of prompts")
    t.add_argument("--folds", type=int, default=5, help="cross-validation folds for calibration (default 5)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--json", action="store_true", help="print the training report as JSON")
    t.set_defaults(func=run_train)

    e = rsub.add_parser("eval", help="measure the trained router on labelled prompts",
                        description="Accuracy (after fallback), macro-F1, latency per prompt, confusion matrix and "
                        "the coverage-vs-accuracy curve of the trained router on a JSONL file.")
    e.add_argument("--coe", required=True, help="the CoE file (coe.yaml)")
    e.add_argument("--data", required=True, metavar="FILE.jsonl", help='{"prompt": ..., "expert": ...} per line')
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--show-misroutes", type=int, default=10, help="misrouted prompts to list (text output)")
    e.set_defaults(func=run_eval)


def run_train(args: argparse.Namespace) -> int:
    coe = load_coe(args.coe)
    data = [] if args.no_examples else examples_from_coe(coe)
    for path in args.data:
        data += read_jsonl(path, coe.expert_names)
    if args.folds < 2:
        raise ConfigError("--folds must be at least 2")
    encoder = make_encoder(args.encoder, args.encoder_path)
    router = train_router(data, coe.expert_names, coe.fallback, encoder=encoder, classifier=args.classifier,
                          threshold=args.threshold, target_accuracy=args.target_accuracy,
                          target_coverage=args.target_coverage, folds=args.folds, seed=args.seed)
    out = router.save(coe.router_dir)
    if args.json:
        print(json.dumps({"router_dir": str(out), "temperature": router.temperature, "threshold": router.threshold,
                          **router.report}))
        return 0
    r = router.report
    print(f"trained a {args.classifier} router on {r['n_train']} prompts "
          f"({', '.join(f'{k} {v}' for k, v in r['per_expert'].items())}) in {r['train_s']:.1f} s")
    for w in r["warnings"]:
        print(f"warning: {w}")
    print(f"out-of-fold accuracy {r['oof_accuracy']:.3f}, calibration error {r['oof_ece']:.3f}, "
          f"temperature {router.temperature:.3f}")
    print(f"threshold {router.threshold:.3f} ({r['threshold_rule']}); below it prompts go to '{router.fallback}'")
    print_curve(r["oof_curve"], "out-of-fold")
    print(f"saved to {out}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    coe = load_coe(args.coe)
    router = load_router_for_coe(coe)
    data = read_jsonl(args.data, coe.expert_names)
    if not data:
        raise ConfigError(f"{args.data}: no labelled prompts")
    rep = evaluate_router(router, data)
    if args.json:
        print(json.dumps(rep))
        return 0
    print(f"n={rep['n']}  accuracy={rep['accuracy']:.3f}  macro_f1={rep['macro_f1']:.3f}  "
          f"fallback_rate={rep['fallback_rate']:.3f}  ece={rep['ece']:.3f}")
    print(f"latency per prompt: p50 {rep['p50_ms']:.3f} ms, p99 {rep['p99_ms']:.3f} ms")
    experts = rep["experts"]
    width = max(len(e) for e in experts) + 2
    print("confusion (rows: true expert, columns: routed to):")
    print(" " * width + "".join(f"{e:>{width}}" for e in experts))
    for e in experts:
        print(f"{e:<{width}}" + "".join(f"{rep['confusion'][e][g]:>{width}}" for g in experts))
    print_curve(rep["curve"], "on this data")
    if rep["misroutes"] and args.show_misroutes:
        print("misrouted:")
        for m in rep["misroutes"][: args.show_misroutes]:
            print(f"  [{m['expert']} -> {m['routed']} {m['confidence']:.2f}] {m['prompt'][:90]}")
    return 0


def print_curve(curve: list[dict], label: str) -> None:
    print(f"coverage vs accuracy ({label}):")
    print("  threshold  coverage  accuracy(decided)  accuracy(with fallback)")
    for p in curve:
        print(f"  {p['threshold']:>9.2f}  {p['coverage']:>8.3f}  {p['accuracy_covered']:>17.3f}  "
              f"{p['accuracy_overall']:>23.3f}")
