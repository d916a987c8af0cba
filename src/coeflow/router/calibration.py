"""Turning classifier scores into honest probabilities, and probabilities into a fallback
threshold a user can reason about.

Temperature scaling (one scalar T: p = softmax(logits / T)) is fitted on held-out
(out-of-fold) predictions by minimising the negative log-likelihood. The coverage-vs-
accuracy curve then says, for each threshold, how many prompts the router would decide
itself (coverage) and how often those decisions are right."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def softmax(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    p = softmax(logits, temperature)
    return float(-np.mean(np.log(np.maximum(p[np.arange(len(y)), y], 1e-12))))


def fit_temperature(logits: np.ndarray, y: np.ndarray, lo: float = 0.02, hi: float = 50.0) -> float:
    """The T minimising held-out NLL, by golden-section search on log T (NLL is unimodal in T)."""
    if len(y) == 0:
        return 1.0
    a, b = np.log(lo), np.log(hi)
    g = (np.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = nll(logits, y, np.exp(c)), nll(logits, y, np.exp(d))
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = nll(logits, y, np.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = nll(logits, y, np.exp(d))
    return float(np.exp((a + b) / 2))


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Mean |confidence - accuracy| over equal-width confidence bins, weighted by bin size."""
    if len(y) == 0:
        return 0.0
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            ece += sel.mean() * abs(conf[sel].mean() - correct[sel].mean())
    return float(ece)


@dataclass(frozen=True)
class CurvePoint:
    threshold: float
    coverage: float  # share of prompts the router decides itself (confidence >= threshold)
    accuracy_covered: float  # accuracy on those prompts (1.0 when none are covered)
    accuracy_overall: float  # accuracy when the rest go to the fallback expert


DEFAULT_GRID = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def curve_point(probs: np.ndarray, y: np.ndarray, fallback: int, threshold: float) -> CurvePoint:
    conf = probs.max(axis=1)
    pred = probs.argmax(axis=1)
    covered = conf >= threshold
    final = np.where(covered, pred, fallback)
    n = max(len(y), 1)
    acc_cov = float((pred[covered] == y[covered]).mean()) if covered.any() else 1.0
    return CurvePoint(float(threshold), float(covered.sum() / n), acc_cov, float((final == y).sum() / n))


def coverage_curve(probs: np.ndarray, y: np.ndarray, fallback: int, grid=DEFAULT_GRID) -> list[CurvePoint]:
    return [curve_point(probs, y, fallback, t) for t in grid]


def choose_threshold(
    probs: np.ndarray,
    y: np.ndarray,
    fallback: int,
    target_accuracy: float | None = None,
    target_coverage: float | None = None,
) -> float:
    """The threshold meeting a target on held-out predictions.

    target_accuracy: the lowest threshold whose covered accuracy reaches the target (so the
    router decides as many prompts as it can while staying that accurate).
    target_coverage: the highest threshold that still leaves at least that share covered."""
    if (target_accuracy is None) == (target_coverage is None):
        raise ValueError("give exactly one of target_accuracy, target_coverage")
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    order = np.argsort(conf, kind="stable")
    sorted_conf = conf[order]
    # correct_from[i]: correct predictions among the prompts at sorted positions >= i.
    correct_from = np.concatenate([np.cumsum(correct[order][::-1])[::-1], [0]])
    candidates = np.unique(np.concatenate([[0.0], conf]))  # ascending
    start = np.searchsorted(sorted_conf, candidates, side="left")
    covered = len(conf) - start
    coverage = covered / max(len(conf), 1)
    accuracy = np.where(covered > 0, correct_from[start] / np.maximum(covered, 1), 1.0)
    if target_accuracy is not None:
        ok = np.flatnonzero(accuracy >= target_accuracy)  # the first has the most coverage
        return float(candidates[ok[0]]) if len(ok) else float(candidates[-1])
    ok = np.flatnonzero(coverage >= target_coverage)
    return float(candidates[ok[-1]]) if len(ok) else 0.0
