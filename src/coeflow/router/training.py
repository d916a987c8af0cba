"""Training a router: encode the labelled prompts once, get out-of-fold predictions with
k-fold cross-validation (so calibration and the threshold are fitted on prompts the model
did not see), fit the temperature and threshold on them, then train the final classifier
on everything. Seconds on a CPU for thousands of prompts."""

from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np

from coeflow.errors import ConfigError
from coeflow.router.calibration import (
    choose_threshold,
    coverage_curve,
    expected_calibration_error,
    fit_temperature,
    softmax,
)
from coeflow.router.classifiers import CLASSIFIERS
from coeflow.router.data import LabelledPrompt, check_training_set
from coeflow.router.encoders import Encoder, HashingEncoder
from coeflow.router.features import take_rows
from coeflow.router.router import Router
from coeflow.router.text import DEFAULT_MAX_CHARS, prompt_text

DEFAULT_THRESHOLD = 0.5  # calibrated: below it the router is more likely wrong than right


def train_router(
    data: list[LabelledPrompt],
    experts: list[str],
    fallback: str,
    encoder: Encoder | None = None,
    classifier: str = "linear",
    threshold: float | None = None,
    target_accuracy: float | None = None,
    target_coverage: float | None = None,
    folds: int = 5,
    seed: int = 0,
) -> Router:
    """Train, calibrate and return a Router; its `report` says how it did out of fold."""
    t0 = time.perf_counter()
    if classifier not in CLASSIFIERS:
        raise ConfigError(f"unknown classifier {classifier!r} (choose {', '.join(CLASSIFIERS)})")
    if fallback not in experts:
        raise ConfigError(f"fallback {fallback!r} is not one of the experts ({', '.join(experts)})")
    if sum(x is not None for x in (threshold, target_accuracy, target_coverage)) > 1:
        raise ConfigError("give at most one of --threshold, --target-accuracy, --target-coverage")
    for name, v in (("threshold", threshold), ("target accuracy", target_accuracy), ("target coverage", target_coverage)):
        if v is not None and not 0.0 <= v <= 1.0:
            raise ConfigError(f"{name} must be between 0 and 1, got {v}")
    data, warnings = check_training_set(data, experts)
    encoder = encoder or HashingEncoder()
    index = {e: i for i, e in enumerate(experts)}
    texts = [prompt_text(d.prompt, DEFAULT_MAX_CHARS) for d in data]
    y = np.array([index[d.expert] for d in data], dtype=np.int64)
    x = encoder.encode(texts)
    n_classes = len(experts)

    # Out-of-fold logits, stratified by expert.
    fold_of = _stratified_folds(y, folds, seed)
    oof = np.zeros((len(y), n_classes))
    for f in range(folds):
        test = np.flatnonzero(fold_of == f)
        train = np.flatnonzero(fold_of != f)
        if len(test) == 0 or len(np.unique(y[train])) < 2:
            continue
        clf = CLASSIFIERS[classifier](n_classes).fit(take_rows(x, train), y[train])
        oof[test] = clf.logits(take_rows(x, test))
    temperature = fit_temperature(oof, y)
    probs = softmax(oof, temperature)
    fb = index[fallback]
    if threshold is None:
        if target_accuracy is not None or target_coverage is not None:
            threshold = choose_threshold(probs, y, fb, target_accuracy, target_coverage)
        else:
            threshold = DEFAULT_THRESHOLD

    final = CLASSIFIERS[classifier](n_classes).fit(x, y)
    pred = probs.argmax(axis=1)
    report = {
        "n_train": int(len(y)),
        "per_expert": {e: int((y == i).sum()) for i, e in enumerate(experts)},
        "folds": folds,
        "oof_accuracy": float((pred == y).mean()),
        "oof_ece": expected_calibration_error(probs, y),
        "oof_curve": [asdict(p) for p in coverage_curve(probs, y, fb, _grid_with(threshold))],
        "threshold_rule": _rule(threshold, target_accuracy, target_coverage),
        "warnings": warnings,
        "train_s": round(time.perf_counter() - t0, 3),
    }
    return Router(
        encoder=encoder,
        classifier=final,
        experts=list(experts),
        fallback=fallback,
        temperature=temperature,
        threshold=float(threshold),
        report=report,
        examples=[{"prompt": d.prompt, "expert": d.expert, "origin": d.origin} for d in data],
    )


def _stratified_folds(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    fold_of = np.zeros(len(y), dtype=np.int64)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        rng.shuffle(members)
        fold_of[members] = np.arange(len(members)) % folds
    return fold_of


def _grid_with(threshold: float) -> tuple[float, ...]:
    from coeflow.router.calibration import DEFAULT_GRID

    return tuple(sorted(set(DEFAULT_GRID) | {round(float(threshold), 4)}))


def _rule(threshold, target_accuracy, target_coverage) -> str:
    if target_accuracy is not None:
        return f"lowest threshold reaching {target_accuracy:.2%} out-of-fold accuracy on decided prompts"
    if target_coverage is not None:
        return f"highest threshold still deciding {target_coverage:.2%} of prompts out of fold"
    return f"fixed threshold {threshold}"
