"""What the runs cost: tokens, FLOPs, wall time, energy and memory per mode, and how long
each stage of the study took."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from textonly.report.common import figure_png, main_scoring
from textonly.study.collect import order
from textonly.core.prompts import MODES


def cost_table(tables: dict) -> pd.DataFrame:
    """Per dataset, model, mode and quality (mean over seeds): training tokens, FLOPs, wall time,
    energy and peak memory; the evaluation's wall time and energy."""
    runs = tables["runs"]
    if runs.empty:
        return runs
    runs = runs[(runs["condition"] == "image") & (runs["scoring"] == main_scoring(runs))].copy()
    for c in ("train_seconds", "train_energy_kwh", "train_text_tokens", "train_image_tokens", "train_flops",
              "train_peak_rss_mb"):
        if c not in runs:
            runs[c] = np.nan
    runs["quality"] = runs["quality"].fillna("")
    agg = runs.groupby(["dataset", "model", "mode", "quality"], sort=False).agg(
        runs=("eval_dir", "count"), text_tokens=("train_text_tokens", "mean"),
        image_tokens=("train_image_tokens", "mean"), train_pflop=("train_flops", lambda s: s.mean() / 1e15),
        train_s=("train_seconds", "mean"), train_wh=("train_energy_kwh", lambda s: 1000 * s.mean()),
        peak_mb=("train_peak_rss_mb", "mean"), eval_s=("eval_seconds", "mean"),
        eval_wh=("eval_energy_kwh", lambda s: 1000 * s.mean()))
    return agg.reset_index().sort_values(["dataset", "model", "mode", "quality"], key=order, ignore_index=True)


def energy_modes(tables: dict) -> str:
    """How the energy figures were obtained, over all runs (measured or estimated)."""
    runs = tables["runs"]
    modes = set()
    for c in ("train_energy_mode", "eval_energy_mode"):
        if c in runs:
            modes |= {str(v) for v in runs[c].dropna()}
    return "; ".join(sorted(modes)) or "not recorded"


def cost_ratio(tables: dict, dataset: str, column: str, a: str = "text_only", b: str = "image_text") -> float:
    """Mean ``column`` of mode ``a`` over mode ``b`` (main quality, image condition) on a dataset."""
    costs = cost_table(tables)
    if costs.empty or column not in costs:
        return float("nan")
    rows = costs[(costs["dataset"] == dataset) & costs["quality"].isin(["", "full"])]
    values = rows.groupby("mode")[column].mean()
    return float(values.get(a, np.nan) / values.get(b, np.nan))


def plot_costs(tables: dict):
    """Training wall time, energy, tokens and FLOPs per mode (mean over seeds, bars; seeds as points)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    runs = tables["runs"]
    if runs.empty:
        return None
    runs = runs[(runs["mode"] != "original") & (runs["condition"] == "image") & (runs["scoring"] == main_scoring(runs))
                & runs["quality"].fillna("full").eq("full")].copy()
    runs["train_wh"] = 1000 * runs["train_energy_kwh"]
    runs["train_tokens"] = runs["train_text_tokens"] + runs["train_image_tokens"]
    runs["train_pflop"] = runs["train_flops"] / 1e15
    panels = [("train_seconds", "wall time (s)"), ("train_wh", "energy (Wh)"), ("train_tokens", "tokens"),
              ("train_pflop", "FLOPs (PFLOP)")]
    fig, axes = plt.subplots(2, 2, figsize=(9, 6.4))
    axes = axes.ravel()
    hues = [m for m in MODES if m in set(runs["mode"])]
    for ax, (column, label) in zip(axes, panels):
        sns.barplot(data=runs, x="dataset", y=column, hue="mode", hue_order=hues, ax=ax, errorbar=None,
                    palette="colorblind", alpha=0.8)
        sns.stripplot(data=runs, x="dataset", y=column, hue="mode", hue_order=hues, ax=ax, dodge=True,
                      color="black", size=3, legend=False)
        ax.set_ylabel(label)
        ax.set_xlabel("")
        ax.legend_.remove() if ax.legend_ else None
    handles, labels = axes[0].get_legend_handles_labels()
    fig.tight_layout()
    fig.legend(handles[: len(hues)], labels[: len(hues)], loc="center left", frameon=False,
               bbox_to_anchor=(1.0, 0.5), title="mode")
    return figure_png(fig)


def stage_times(study) -> pd.DataFrame:
    """How long each stage of the study took to make its results (from ``step.json``: the
    execution that made them, kernel start-up included): steps, total and longest seconds."""
    rows = []
    for step in study.steps.values():
        try:
            record = json.loads((step.dir / "step.json").read_text())
        except (OSError, ValueError):
            continue
        if record.get("status") == "done":
            rows.append({"stage": step.stage, "run_id": step.run_id,
                         "seconds": record.get("made_seconds", record.get("seconds", np.nan))})
    frame = pd.DataFrame(rows, columns=["stage", "run_id", "seconds"])
    if frame.empty:
        return frame
    out = frame.groupby("stage", sort=False).agg(steps=("run_id", "count"), seconds=("seconds", "sum"),
                                                 longest=("seconds", "max")).reset_index()
    total = pd.DataFrame([{"stage": "all", "steps": int(out["steps"].sum()), "seconds": out["seconds"].sum(),
                           "longest": out["longest"].max()}])
    return pd.concat([out, total], ignore_index=True)
