"""A stand-in for llama.cpp's converter in tests, with the entry points coeflow.bench.gguf_convert
uses (TextModel.get_vocab_base_pre refusing an unknown vocabulary, and main). It converts
nothing: the output file records the pre-tokenizer it was answered and the type asked for."""

import argparse
from pathlib import Path


class TextModel:
    def __init__(self, dir_model: Path) -> None:
        self.dir_model = dir_model

    def get_vocab_base_pre(self, tokenizer) -> str:
        raise NotImplementedError("BPE pre-tokenizer was not recognized")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--outtype", required=True)
    p.add_argument("--outfile", required=True)
    args = p.parse_args()
    pre = TextModel(Path(args.model)).get_vocab_base_pre(None)
    Path(args.outfile).write_text(f"{pre} {args.outtype}\n")
