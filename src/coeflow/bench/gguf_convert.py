"""Convert a coeflow expert checkpoint to GGUF with llama.cpp's own `convert_hf_to_gguf.py`, for
the llama-server peer of `bench serve --workload mixed`. Run as a subprocess:

    python -m coeflow.bench.gguf_convert LLAMA_CPP_TREE CHECKPOINT --outtype f32 --outfile OUT.gguf

The converter names a BPE pre-tokenizer by hashing how it splits a probe text and knows only
the hashes of published models; a vocabulary trained here (the demo's) always hashes anew, and
the converter refuses it. Where that happens and tokenizer.json pre-tokenizes exactly as GPT-2
does (byte-level BPE with GPT-2's split pattern, no normalizer), this answers llama.cpp's
"gpt-2" pre-tokenizer, which implements that split; anything else still fails as before. The
converter's files are not changed."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path


def splits_like_gpt2(tokenizer_json: Path) -> bool:
    """tokenizer.json is byte-level BPE with GPT-2's split pattern and no normalizer."""
    if not tokenizer_json.is_file():
        return False
    spec = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    pre = spec.get("pre_tokenizer") or {}
    if pre.get("type") == "Sequence" and len(pre.get("pretokenizers", [])) == 1:
        pre = pre["pretokenizers"][0]
    return (spec.get("model", {}).get("type") == "BPE" and spec.get("normalizer") is None
            and pre.get("type") == "ByteLevel" and pre.get("use_regex", True) is True
            and pre.get("add_prefix_space", False) is False)


def main(argv: list[str]) -> None:
    tree, rest = Path(argv[0]), argv[1:]
    sys.path[:0] = [str(tree), str(tree / "gguf-py")]
    conv = importlib.import_module("convert_hf_to_gguf")
    text_model = getattr(conv, "TextModel", None) or importlib.import_module("conversion.base").TextModel
    known = text_model.get_vocab_base_pre

    def vocab_base_pre(self, tokenizer) -> str:
        try:
            return known(self, tokenizer)
        except NotImplementedError:
            if not splits_like_gpt2(Path(self.dir_model) / "tokenizer.json"):
                raise
            return "gpt-2"

    text_model.get_vocab_base_pre = vocab_base_pre
    sys.argv = [conv.__file__, *rest]
    conv.main()


if __name__ == "__main__":
    main(sys.argv[1:])
