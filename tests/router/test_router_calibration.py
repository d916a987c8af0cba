"""Calibration maths: temperature scaling finds the temperature that generated the labels,
and thresholds chosen for a target meet it."""

from __future__ import annotations

import numpy as np
import pytest

from coeflow.router.calibration import choose_threshold, coverage_curve, fit_temperature, softmax


def _sample(true_t: float, n: int = 20000, c: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, size=(n, c))
    p = softmax(logits, true_t)
    y = np.array([rng.choice(c, p=row) for row in p])
    return logits, y


@pytest.mark.parametrize("true_t", [0.5, 1.0, 3.0])
def test_temperature_scaling_recovers_the_generating_temperature(true_t):
    logits, y = _sample(true_t)
    assert fit_temperature(logits, y) == pytest.approx(true_t, rel=0.1)


def test_coverage_falls_as_the_threshold_rises_and_thresholds_meet_targets():
    logits, y = _sample(1.0)
    probs = softmax(logits)
    curve = coverage_curve(probs, y, fallback=0)
    cov = [p.coverage for p in curve]
    assert cov == sorted(cov, reverse=True) and cov[0] == 1.0
    t = choose_threshold(probs, y, 0, target_accuracy=0.9)
    conf, pred = probs.max(1), probs.argmax(1)
    assert (pred[conf >= t] == y[conf >= t]).mean() >= 0.9
    t2 = choose_threshold(probs, y, 0, target_coverage=0.7)
    assert (conf >= t2).mean() >= 0.7
