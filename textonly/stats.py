"""Statistics of the measurement rules: accuracy with 95% bootstrap intervals clustered by image."""

from __future__ import annotations

import numpy as np


def clustered_bootstrap_ci(correct, clusters, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95):
    """Accuracy and its percentile bootstrap interval, resampling whole clusters (images).

    Questions about one image are not independent (K-VISCUIT asks several per image), so
    the interval resamples images, not questions. Returns ``(accuracy, low, high)``.
    """
    correct = np.asarray(correct, dtype=float)
    if correct.size == 0:
        return float("nan"), float("nan"), float("nan")
    keys, index = np.unique(np.asarray(clusters, dtype=object).astype(str), return_inverse=True)
    sums = np.bincount(index, weights=correct, minlength=len(keys))
    counts = np.bincount(index, minlength=len(keys)).astype(float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(keys), size=(n_boot, len(keys)))
    boot = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    alpha = (1 - level) / 2
    return float(correct.mean()), float(np.quantile(boot, alpha)), float(np.quantile(boot, 1 - alpha))
