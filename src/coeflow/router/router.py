"""The trained router as the server uses it: `Router.load(dir)` once, then
`router.route(prompt_or_messages)` per request (tens of microseconds with the default
encoder). A router directory holds router.json (settings, classes, calibration, report),
router.npz (arrays) and examples.jsonl (the training prompts, for explanations): no pickle,
so loading one is safe and fast."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coeflow.errors import ConfigError
from coeflow.router.calibration import softmax
from coeflow.router.classifiers import CLASSIFIERS, KNNClassifier, LinearClassifier
from coeflow.router.encoders import Encoder, HashingEncoder, encoder_from_spec
from coeflow.router.text import DEFAULT_MAX_CHARS, prompt_text

FORMAT_VERSION = 1


@dataclass(frozen=True)
class RouteDecision:
    """Where a prompt goes and how sure the router is.

    expert: the expert to run (the fallback when the router is unsure).
    confidence: calibrated probability of the router's top choice (`top`).
    fell_back: True when confidence was below the threshold (or the prompt was empty) and
        `expert` is the fallback instead of `top`.
    candidates: every expert with its probability, most likely first."""

    expert: str
    confidence: float
    fell_back: bool
    candidates: list[tuple[str, float]]
    top: str
    reason: str = ""


@dataclass
class Router:
    encoder: Encoder
    classifier: LinearClassifier | KNNClassifier
    experts: list[str]  # class index -> expert name
    fallback: str
    temperature: float = 1.0
    threshold: float = 0.5
    max_chars: int = DEFAULT_MAX_CHARS
    report: dict[str, Any] = field(default_factory=dict)
    examples: list[dict[str, str]] | None = None  # training prompts (kNN explanations)
    _examples_path: Path | None = None

    def probabilities(self, text: str) -> np.ndarray:
        """Calibrated probabilities over `experts` for an already-normalised text."""
        if isinstance(self.encoder, HashingEncoder):
            logits = self.classifier.logits_one(*self.encoder.encode_one(text))
        else:
            logits = self.classifier.logits(self.encoder.encode([text]))[0]
        return softmax(logits, self.temperature)

    def route(self, prompt: Any) -> RouteDecision:
        """Route a string, bytes or a list of chat messages. Never raises on odd text: an
        empty prompt goes to the fallback with confidence 0; invalid UTF-8 is replaced; a
        long prompt is routed on its first and last max_chars/2 characters."""
        text = prompt_text(prompt, self.max_chars)
        if not text:
            cands = [(e, 0.0) for e in self.experts]
            return RouteDecision(self.fallback, 0.0, True, cands, self.fallback, "empty prompt")
        p = self.probabilities(text)
        order = np.argsort(-p, kind="stable")
        cands = [(self.experts[i], float(p[i])) for i in order]
        top, conf = cands[0]
        if conf < self.threshold and top != self.fallback:
            reason = f"confidence {conf:.2f} below threshold {self.threshold:.2f}"
            return RouteDecision(self.fallback, conf, True, cands, top, reason)
        return RouteDecision(top, conf, False, cands, top)

    def nearest_examples(self, prompt: Any, n: int = 3) -> list[tuple[str, str, float]]:
        """(prompt, expert, cosine similarity) of the closest training prompts (kNN only)."""
        if not isinstance(self.classifier, KNNClassifier):
            return []
        text = prompt_text(prompt, self.max_chars)
        if not text:
            return []
        examples = self._load_examples()
        x = self.encoder.encode([text])
        return [(examples[i]["prompt"], examples[i]["expert"], s) for i, s in self.classifier.nearest(x, n)]

    def top_terms(self, prompt: Any, expert: str, n: int = 5) -> list[tuple[str, float]]:
        """The n-gram features that pushed most towards `expert` (linear + hashing only)."""
        if not (isinstance(self.classifier, LinearClassifier) and isinstance(self.encoder, HashingEncoder)):
            return []
        text = prompt_text(prompt, self.max_chars)
        c = self.experts.index(expert)
        idx, val = self.encoder.encode_one(text)
        weight = dict(zip(idx.tolist(), (val * self.classifier.w[idx, c]).tolist()))
        scored: dict[str, float] = {}
        for term in self.encoder.terms(text):
            j = self.encoder.column(term)
            if j in weight:
                scored[term] = weight[j]
        best = sorted(scored.items(), key=lambda kv: -kv[1])[:n]
        return [(_readable(t), s) for t, s in best if s > 0]

    def _load_examples(self) -> list[dict[str, str]]:
        if self.examples is None and self._examples_path is not None and self._examples_path.exists():
            with open(self._examples_path, encoding="utf-8") as f:
                self.examples = [json.loads(line) for line in f if line.strip()]
        return self.examples or []

    # ---- persistence -------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "encoder": self.encoder.spec(d),
            "classifier": {"kind": self.classifier.kind},
            "experts": self.experts,
            "fallback": self.fallback,
            "temperature": self.temperature,
            "threshold": self.threshold,
            "max_chars": self.max_chars,
            "report": self.report,
        }
        arrays = {f"clf_{k}": v for k, v in self.classifier.arrays().items()}
        _atomic_write(d / "router.npz", lambda f: np.savez(f, **arrays))
        if self.examples is not None:
            lines = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in self.examples)
            _atomic_write(d / "examples.jsonl", lambda f: f.write(lines.encode("utf-8")))
        # router.json last: its presence says the directory is complete.
        _atomic_write(d / "router.json", lambda f: f.write(json.dumps(meta, indent=1).encode("utf-8")))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "Router":
        d = Path(directory)
        meta_path = d / "router.json"
        if not meta_path.exists():
            raise ConfigError(f"{d}: no trained router here (router.json missing); run `coeflow router train --coe FILE`")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            with np.load(d / "router.npz", allow_pickle=False) as z:
                arrays = {k.removeprefix("clf_"): z[k] for k in z.files}
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise ConfigError(f"{d}: cannot read the router ({e}); retrain it with `coeflow router train`") from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise ConfigError(f"{meta_path}: router format {meta.get('format_version')} is not {FORMAT_VERSION}; retrain it")
        experts = list(meta["experts"])
        kind = meta["classifier"]["kind"]
        if kind not in CLASSIFIERS:
            raise ConfigError(f"{meta_path}: unknown classifier {kind!r}")
        clf = CLASSIFIERS[kind].from_arrays(arrays, len(experts))
        return cls(
            encoder=encoder_from_spec(meta["encoder"], d),
            classifier=clf,
            experts=experts,
            fallback=meta["fallback"],
            temperature=float(meta["temperature"]),
            threshold=float(meta["threshold"]),
            max_chars=int(meta.get("max_chars", DEFAULT_MAX_CHARS)),
            report=meta.get("report", {}),
            _examples_path=d / "examples.jsonl",
        )


def _readable(term: str) -> str:
    """Words and word pairs as typed, capitalised words in capitals, character n-grams as ~ngram."""
    kind, _, rest = term.partition(":")
    if kind in ("w", "b") and rest:
        return rest
    if kind == "u" and rest:
        return rest.upper()
    return "~" + term


def _atomic_write(path: Path, write) -> None:
    """Write beside the target then rename, so a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
