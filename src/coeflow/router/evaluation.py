"""Measuring a trained router on labelled prompts: accuracy after fallback, macro-F1,
confusion matrix, the coverage-vs-accuracy curve, and per-prompt latency of `route()`."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import numpy as np

from coeflow.router.calibration import coverage_curve, expected_calibration_error
from coeflow.router.data import LabelledPrompt
from coeflow.router.router import Router
from coeflow.router.text import prompt_text


def evaluate_router(router: Router, data: list[LabelledPrompt], warmup: int = 20) -> dict[str, Any]:
    """One JSON-able object: n, accuracy, macro_f1, p50_ms, p99_ms, confusion, curve, ..."""
    experts = router.experts
    index = {e: i for i, e in enumerate(experts)}
    for d in data[:warmup]:  # first calls pay for lazy imports and caches
        router.route(d.prompt)
    times, final, probs, y = [], [], [], []
    misroutes = []
    for d in data:
        t0 = time.perf_counter_ns()
        dec = router.route(d.prompt)
        times.append((time.perf_counter_ns() - t0) / 1e6)
        final.append(index[dec.expert])
        y.append(index[d.expert])
        by_name = dict(dec.candidates)
        probs.append([by_name[e] for e in experts])
        if dec.expert != d.expert:
            misroutes.append({"prompt": d.prompt[:200], "expert": d.expert, "routed": dec.expert,
                              "confidence": round(dec.confidence, 3), "origin": d.origin})
    y_arr, f_arr, p_arr = np.array(y), np.array(final), np.array(probs)
    confusion = {e: {g: int(((y_arr == i) & (f_arr == j)).sum()) for j, g in enumerate(experts)}
                 for i, e in enumerate(experts)}
    n = len(data)
    # Top choice before fallback, to show what the threshold costs or saves.
    top = p_arr.argmax(axis=1) if n else np.zeros(0, int)
    empty = np.array([not prompt_text(d.prompt) for d in data], dtype=bool)
    top[empty] = index[router.fallback]
    return {
        "n": n,
        "accuracy": float((f_arr == y_arr).mean()) if n else 0.0,
        "accuracy_without_fallback": float((top == y_arr).mean()) if n else 0.0,
        "macro_f1": macro_f1(y_arr, f_arr, len(experts)),
        "fallback_rate": float(np.mean([f != t for f, t in zip(f_arr, top)])) if n else 0.0,
        "p50_ms": float(np.percentile(times, 50)) if n else 0.0,
        "p99_ms": float(np.percentile(times, 99)) if n else 0.0,
        "ece": expected_calibration_error(p_arr, y_arr) if n else 0.0,
        "threshold": router.threshold,
        "experts": experts,
        "confusion": confusion,
        "curve": [asdict(p) for p in coverage_curve(p_arr, y_arr, index[router.fallback])] if n else [],
        "misroutes": misroutes,
    }


def macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Mean F1 over the classes present in the labels or the predictions."""
    scores = []
    for c in range(n_classes):
        tp = int(((pred == c) & (y == c)).sum())
        fp = int(((pred == c) & (y != c)).sum())
        fn = int(((pred != c) & (y == c)).sum())
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0
