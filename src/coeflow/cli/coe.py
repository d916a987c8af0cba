"""`coeflow coe hash COE_FILE [--write]`: the checksum of each expert's weights, as the store
checks it on every load when the CoE file gives it (coeflow.backend.real.integrity)."""

from __future__ import annotations

import argparse

from coeflow.coefile import load_coe, write_sha256

HASH_HELP = """\
Print the sha256 of each expert's weights: of its checkpoint's safetensors files concatenated
in name order (model.safetensors alone, or the shards its index names); for a single-file
checkpoint that is `sha256sum model.safetensors`. With --write, record them in the CoE file as
each expert's `sha256:`, changing nothing else in it. Once an expert has one, every load of it
from disk hashes what it reads, and a mismatch marks the expert failed instead of serving it.
Exit status 1 when the CoE file gives a checksum that differs from the files' (unless --write
replaced it)."""


def register(sub: argparse._SubParsersAction, help_text: str) -> None:
    p = sub.add_parser("coe", help=help_text, description=help_text)
    csub = p.add_subparsers(dest="coe_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    h = csub.add_parser("hash", help="print (or --write) the sha256 of each expert's weights", description=HASH_HELP,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    h.add_argument("coe", metavar="COE_FILE", help="the CoE file (coe.yaml, or its directory)")
    h.add_argument("--write", action="store_true", help="write the checksums into the CoE file")
    h.set_defaults(func=run_hash)


def run_hash(args: argparse.Namespace) -> int:
    from coeflow.backend.real.integrity import checkpoint_sha256  # imports PyTorch

    coe = load_coe(args.coe)
    digests: dict[str, str] = {}
    differ = 0
    for e in coe.experts:
        digests[e.name] = digest = checkpoint_sha256(e.path)
        note = ""
        if e.sha256 == digest:
            note = "  (as in the CoE file)"
        elif e.sha256 is not None:
            note = f"  (the CoE file gives {e.sha256})"
            differ += 1
        print(f"{digest}  {e.name}{note}", flush=True)
    if args.write:
        write_sha256(coe.source, digests)
        print(f"wrote {len(digests)} checksums to {coe.source}")
        return 0
    return 1 if differ else 0
