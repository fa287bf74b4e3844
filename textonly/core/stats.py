"""Statistics of the measurement rules: accuracy with 95% bootstrap intervals clustered by image."""

from __future__ import annotations

from collections import defaultdict

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


def mcnemar(correct_a: dict, correct_b: dict) -> dict:
    """Exact McNemar test between two evaluations of the same questions (paired by question id).

    ``correct_a`` / ``correct_b`` map question ids to correctness. Only the discordant
    pairs carry information: ``a_only`` questions right under A and wrong under B, and
    ``b_only`` the reverse; the p-value is the two-sided exact binomial test of
    ``a_only`` among ``a_only + b_only`` at 1/2.
    """
    from scipy.stats import binomtest

    if set(correct_a) != set(correct_b):
        raise ValueError(f"the evaluations cover different questions ({len(set(correct_a) ^ set(correct_b))} "
                         "ids in one only); McNemar pairs the same questions")
    a_only = sum(bool(correct_a[k]) and not correct_b[k] for k in correct_a)
    b_only = sum(bool(correct_b[k]) and not correct_a[k] for k in correct_a)
    p = binomtest(a_only, a_only + b_only, 0.5).pvalue if a_only + b_only else 1.0
    return {"n": len(correct_a), "a_only": a_only, "b_only": b_only, "p_value": float(p)}


def accuracy_table(records: list[dict], predictions: list[dict], by: str = "question_type") -> dict:
    """Accuracy overall and per value of ``by``, each with a 95% interval clustered by image."""
    correct = {p["id_"]: p["correct"] for p in predictions}
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups["overall"].append(r)
        groups[str(r[by])].append(r)
    table = {}
    for key, rs in groups.items():
        acc, low, high = clustered_bootstrap_ci([correct[r["id_"]] for r in rs],
                                                [r["image_path"] or r["id_"] for r in rs])
        table[key] = {"accuracy": acc, "low": low, "high": high, "n": len(rs)}
    return table


def metrics(records: list[dict], predictions: list[dict]) -> dict:
    """Accuracy overall, per ``question_type`` and per ``category``, with clustered intervals."""
    by_type = accuracy_table(records, predictions, by="question_type")
    return {"overall": by_type.pop("overall"), "question_type": by_type,
            "category": {k: v for k, v in accuracy_table(records, predictions, by="category").items()
                         if k != "overall"}}
