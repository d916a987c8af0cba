"""Encoders turn prompts into feature vectors. The default (`hashing`) needs no weights and
runs in well under a millisecond; `sentence-transformers` and `llama` embed with a local
model when the user has one (Samba-CoE derives its router from its base LLM, which is
what `llama` does: mean-pooled final hidden states of a Llama-family checkpoint)."""

from __future__ import annotations

import math
import os
import re
import zlib
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from coeflow.errors import ConfigError
from coeflow.router.features import Features, SparseRows, l2_normalise_dense


class Encoder(Protocol):
    kind: str

    def encode(self, texts: list[str]) -> Features: ...

    def spec(self, base_dir: Path) -> dict[str, Any]: ...


_TOKEN = re.compile(r"[a-z0-9_]+|[^\sa-z0-9_]")
_CAPS = re.compile(r"\b[A-Z][A-Z_]{1,}\b")
# "what's", "don't", "I'm": the apostrophe and its ending say nothing about the topic.
_CONTRACTION = re.compile(r"(?<=[a-z])['\u2019](s|t|re|m|ll|ve|d)\b")

# Code shape: what a prompt looks like, whatever its words. A user who types `__slots__`,
# `os.path.join(p)`, `ls -la | grep x` or `3x + 4 = 19` shows the domain by the form of
# what they typed, even when the words themselves were never in the training prompts.
_SHAPES = [
    ("dunder", re.compile(r"__[A-Za-z]\w*__")),
    ("dotted", re.compile(r"\b[A-Za-z_]\w*\.[A-Za-z_]\w*")),
    ("call", re.compile(r"\b[A-Za-z_]\w*\(")),
    ("snake", re.compile(r"\b[a-z][a-z0-9]*_[a-z0-9_]+\b")),
    ("camel", re.compile(r"\b[a-z]+[A-Z][A-Za-z]+\b")),
    ("pyerror", re.compile(r"\b[A-Z][A-Za-z]+(?:Error|Exception|Warning)\b")),
    ("flag", re.compile(r"(?<![\w-])--?[A-Za-z][\w-]*")),
    ("path", re.compile(r"(?<![\w/])(?:~|\.{1,2})?/[\w.-]+")),
    ("glob", re.compile(r"\*\.\w+")),
    ("shellvar", re.compile(r"\$(?:[{(]|[A-Za-z_@?#]|\d(?![\d.,]))")),
    ("redirect", re.compile(r"\d?>>?&?\d?\s|\d>&\d|\s\|\s|&&|\|\|")),
    ("arith", re.compile(r"\d\s*[-+*/^x\u00d7\u00f7]\s*\(?\d")),
    ("power", re.compile(r"\w\^\d|\*\*\d")),
    ("equation", re.compile(r"\b\d*[a-z]\s*[-+=]\s*\d|\d\s*=\s*-?\d*[a-z]?\b")),
    ("percent", re.compile(r"\d\s*%")),
    ("money", re.compile(r"[$\u00a3\u20ac]\s?\d")),
    ("number", re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])")),
    ("sqlkw", re.compile(r"\b(?:SELECT|FROM|WHERE|JOIN|GROUP BY|ORDER BY|INSERT|UPDATE|DELETE|CREATE|ALTER|HAVING)\b")),
    ("quoted", re.compile(r"'[^'\s]+'|\"[^\"\s]+\"")),
    ("fence", re.compile(r"```|`[^`]+`")),
    ("indent", re.compile(r"\n[ \t]+\S")),
    ("colon_eol", re.compile(r":[ \t]*\n")),
    ("brackets", re.compile(r"[\[{][^\]}]*[\]}]")),
]

# Function words say how a question is asked, not what it is about; left in, a router
# learns that "what is ...?" means whichever expert's examples were phrased that way.
STOP_WORDS = frozenset("""
a an the and or but if then so of to in on at by for with from into onto about as than too very
is are was were be been being am do does did doing have has had having i me my we our you your he
she it its they them their this that these those there here what which who whom whose when where
why how can could would should will shall may might must please show tell give let help explain
want need get got make also just some any all each every no not one way best thanks hi hello
""".split())


class HashingEncoder:
    """Hashed word unigrams, word bigrams and character n-grams inside words (so "sorting"
    and "sorted" share features), sublinear counts, signed hashing, L2-normalised.

    Stable across processes and machines: the hash is CRC32, not Python's salted hash()."""

    kind = "hashing"

    def __init__(self, n_bits: int = 18, char_ngrams: tuple[int, int] = (3, 5), char_weight: float = 0.5,
                 stop_words: bool = True, shapes: bool = True):
        if not 8 <= n_bits <= 24:
            raise ConfigError(f"hashing encoder: n_bits must be in 8..24, got {n_bits}")
        self.n_bits = n_bits
        self.char_ngrams = (int(char_ngrams[0]), int(char_ngrams[1]))
        self.char_weight = float(char_weight)
        self.stop_words = bool(stop_words)
        self.shapes = bool(shapes)  # code-shape features and contraction folding (routers saved before: off)
        self._mask = (1 << n_bits) - 1

    @property
    def dim(self) -> int:
        return 1 << self.n_bits

    def terms(self, text: str) -> dict[str, float]:
        """Feature name -> weight, before hashing (also what explains a decision)."""
        lowered = text.lower()
        if self.shapes:
            lowered = _CONTRACTION.sub("", lowered)
        raw = _TOKEN.findall(lowered)
        counts: dict[str, float] = {}
        if self.shapes:
            for name, pattern in _SHAPES:
                n = len(pattern.findall(text))
                if n:
                    counts["s:" + name] = float(n)
        # Words typed in capitals (SELECT, WHERE, PATH) are keywords or names: a signal that
        # lower-casing would lose, and never a stop word.
        for word in _CAPS.findall(text):
            key = "u:" + word.lower()
            counts[key] = counts.get(key, 0.0) + 1.0
        tokens = [t for t in raw if t not in STOP_WORDS] if self.stop_words else raw
        for t in tokens:
            key = "w:" + t
            counts[key] = counts.get(key, 0.0) + 1.0
        for a, b in zip(tokens, tokens[1:]):
            key = "b:" + a + " " + b
            counts[key] = counts.get(key, 0.0) + 1.0
        lo, hi = self.char_ngrams
        cw = self.char_weight
        for t in tokens:
            if len(t) < 2 or not t[0].isalnum():
                continue
            padded = "<" + t + ">"
            for n in range(lo, min(hi, len(padded)) + 1):
                for i in range(len(padded) - n + 1):
                    key = padded[i : i + n]
                    counts[key] = counts.get(key, 0.0) + cw
        return counts

    def column(self, term: str) -> int:
        """The hashed column of a feature name."""
        return zlib.crc32(term.encode("utf-8")) & self._mask

    def encode_one(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        acc: dict[int, float] = {}
        mask = self._mask
        for term, c in self.terms(text).items():
            h = zlib.crc32(term.encode("utf-8"))
            v = 1.0 + math.log(c) if c >= 1.0 else c
            if h & 0x80000000:
                v = -v
            j = h & mask
            acc[j] = acc.get(j, 0.0) + v
        if not acc:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        idx = np.fromiter(acc.keys(), dtype=np.int64, count=len(acc))
        val = np.fromiter(acc.values(), dtype=np.float64, count=len(acc))
        norm = float(np.sqrt(val @ val))
        if norm > 0:
            val /= norm
        order = np.argsort(idx)
        return idx[order], val[order].astype(np.float32)

    def encode(self, texts: list[str]) -> SparseRows:
        return SparseRows.from_rows([self.encode_one(t) for t in texts], self.dim)

    def spec(self, base_dir: Path) -> dict[str, Any]:
        return {"kind": self.kind, "n_bits": self.n_bits, "char_ngrams": list(self.char_ngrams),
                "char_weight": self.char_weight, "stop_words": self.stop_words, "shapes": self.shapes}


class SentenceTransformerEncoder:
    """A sentence-transformers model from a local directory (optional dependency)."""

    kind = "sentence-transformers"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise ConfigError(f"sentence-transformers encoder: {self.path} does not exist (give a local model directory)")
        try:
            from sentence_transformers import SentenceTransformer  # type: ignore[import-not-found]
        except ImportError:
            raise ConfigError(
                "the sentence-transformers encoder needs the 'sentence-transformers' package "
                "(pip install sentence-transformers), or use --encoder hashing"
            ) from None
        self._model = SentenceTransformer(str(self.path), device="cpu")

    def encode(self, texts: list[str]) -> np.ndarray:
        vecs = self._model.encode(texts, convert_to_numpy=True, show_progress_bar=False)
        return l2_normalise_dense(np.asarray(vecs, dtype=np.float32))

    def spec(self, base_dir: Path) -> dict[str, Any]:
        return {"kind": self.kind, "path": _portable_path(self.path, base_dir)}


class LlamaHiddenStateEncoder:
    """Mean of the final normed hidden states of a local Llama-family checkpoint, on coeflow's
    own model (`coeflow.model`). Prompts are cut to `max_tokens` tokens."""

    kind = "llama"

    def __init__(self, path: str | Path, max_tokens: int = 256):
        self.path = Path(path)
        self.max_tokens = int(max_tokens)
        if not (self.path / "config.json").exists():
            raise ConfigError(f"llama encoder: {self.path} is not a checkpoint directory (no config.json)")
        self._embed = _load_llama_backend(self.path)

    def encode(self, texts: list[str]) -> np.ndarray:
        return l2_normalise_dense(np.stack([self._embed(t, self.max_tokens) for t in texts]))

    def spec(self, base_dir: Path) -> dict[str, Any]:
        return {"kind": self.kind, "path": _portable_path(self.path, base_dir), "max_tokens": self.max_tokens}


def _load_llama_backend(path: Path):
    """Returns embed(text, max_tokens) -> float32 [hidden]: the mean of the checkpoint's final
    hidden states over the prompt's tokens."""
    import torch

    from coeflow.model import Tokenizer, load_model
    model = load_model(path, dtype=torch.float32, device="cpu")
    tok = Tokenizer.from_dir(path)

    def embed(text: str, max_tokens: int) -> np.ndarray:
        ids = tok.encode(text)[:max_tokens] or [0]
        with torch.inference_mode():
            h = model.hidden_states(torch.tensor([ids], dtype=torch.long))
        return h[0].mean(dim=0).float().numpy()

    return embed


def _portable_path(path: Path, base_dir: Path) -> str:
    """Store paths relative to the router directory when possible, so a CoE can be moved."""
    try:
        return os.path.relpath(Path(path).resolve(), Path(base_dir).resolve())
    except ValueError:  # another drive on Windows
        return str(Path(path).resolve())


def encoder_from_spec(spec: dict[str, Any], base_dir: Path) -> Encoder:
    kind = spec.get("kind")
    if kind == "hashing":
        return HashingEncoder(int(spec["n_bits"]), tuple(spec["char_ngrams"]), float(spec["char_weight"]),
                              bool(spec.get("stop_words", True)), bool(spec.get("shapes", False)))
    if kind == "sentence-transformers":
        return SentenceTransformerEncoder(Path(base_dir) / spec["path"])
    if kind == "llama":
        return LlamaHiddenStateEncoder(Path(base_dir) / spec["path"], int(spec.get("max_tokens", 256)))
    raise ConfigError(f"unknown encoder kind {kind!r} (known: hashing, sentence-transformers, llama)")


def make_encoder(kind: str = "hashing", path: str | Path | None = None) -> Encoder:
    """The encoder a user names on the command line."""
    if kind == "hashing":
        return HashingEncoder()
    if kind in ("sentence-transformers", "llama"):
        if path is None:
            raise ConfigError(f"the {kind} encoder needs a local model directory (--encoder-path)")
        return SentenceTransformerEncoder(path) if kind == "sentence-transformers" else LlamaHiddenStateEncoder(path)
    raise ConfigError(f"unknown encoder {kind!r} (choose hashing, sentence-transformers or llama)")
