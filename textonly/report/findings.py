"""The main page's findings: the main table, the scorings side by side, the paper's figures
beside ours, the numbers glued into the prose, and the per-question-type and per-category breakdowns."""

from __future__ import annotations

import numpy as np
import pandas as pd

from textonly.core.prompts import SCORINGS
from textonly.organism.worlds.text import QUALITIES
from textonly.report.common import (CHANCE, figure_png, in_study_order, main_rows, pct,
                                    with_interval)
from textonly.core.prompts import MODES


def main_table(study, tables: dict) -> pd.DataFrame:
    """Dataset x model x mode: overall, Type 1 and Type 2 accuracy (%, 95% interval clustered by
    image, mean over seeds), the seeds, and McNemar's test against ``original`` per seed."""
    summary = main_rows(study, tables["summary"])
    if summary.empty:
        return pd.DataFrame()
    summary = summary[summary["breakdown"].isin(["overall", "question_type"])]
    wide = summary.assign(cell=summary.apply(with_interval, axis=1)).pivot_table(
        index=["dataset", "model", "mode"], columns="group", values="cell", aggfunc="first")
    seeds = summary[summary["group"] == "overall"].set_index(["dataset", "model", "mode"])["seeds"]
    wide = wide.reindex(columns=[c for c in ("overall", "Type 1", "Type 2") if c in wide.columns])
    wide.columns.name = None
    wide["seeds"] = seeds.reindex(wide.index).astype(int)
    wide["McNemar p vs original"] = [_p_cell(study, tables["comparisons"], d, m, mode)
                                                 for d, m, mode in wide.index]
    wide = in_study_order(study, wide.reset_index())
    return wide.rename(columns={"overall": "overall % [95% CI]", "Type 1": "Type 1 %", "Type 2": "Type 2 %"})


def scorings_table(study, tables: dict) -> pd.DataFrame:
    """The main comparison under each scoring (option, letter, generate) side by side: overall,
    Type 1 and Type 2 accuracy (%, 95% interval, mean over seeds) and, for generate, the
    share of answers that did not parse (counted wrong)."""
    summary = tables["summary"]
    if summary.empty:
        return pd.DataFrame()
    frames = []
    for scoring in [s for s in SCORINGS if s in set(summary["scoring"])]:
        rows = main_rows(study, summary, scoring=scoring)
        rows = rows[rows["breakdown"].isin(["overall", "question_type"])]
        wide = rows.assign(cell=rows.apply(with_interval, axis=1)).pivot_table(
            index=["dataset", "model", "mode"], columns="group", values="cell", aggfunc="first")
        wide = wide.reindex(columns=[c for c in ("overall", "Type 1", "Type 2") if c in wide.columns])
        wide.columns.name = None
        wide["seeds"] = rows[rows["group"] == "overall"].set_index(["dataset", "model", "mode"])["seeds"] \
            .reindex(wide.index).astype(int)
        frames.append(wide.reset_index().assign(scoring=scoring))
    out = pd.concat(frames, ignore_index=True)
    runs = tables["runs"]
    if "parse_failure_rate" in runs:
        failures = runs.groupby(["dataset", "model", "mode", "scoring"])["parse_failure_rate"].mean()
        out["parse failures %"] = [pct(failures.get((d, m, mode, sc), np.nan)) for d, m, mode, sc in
                                   zip(out["dataset"], out["model"], out["mode"], out["scoring"])]
    out = in_study_order(study, out)
    columns = ["dataset", "model", "mode", "scoring", "overall", "Type 1", "Type 2", "seeds"]
    columns += ["parse failures %"] if "parse failures %" in out else []
    return out[columns].rename(columns={"overall": "overall % [95% CI]", "Type 1": "Type 1 %", "Type 2": "Type 2 %"})


def _p_cell(study, comparisons: pd.DataFrame, dataset: str, model: str, mode: str) -> str:
    if mode == "original" or comparisons.empty:
        return "–"
    rows = main_rows(study, comparisons.rename(columns={"a_quality": "quality"}))
    rows = rows[(rows["dataset"] == dataset) & (rows["model"] == model) & (rows["a"] == mode)
                & (rows["b"] == "original") & (rows["group"] == "overall")]
    if rows.empty:
        return "–"
    pooled = rows[rows["seed"].astype(str) == "pooled"]["p_value"]
    p = rows[rows["seed"].astype(str) != "pooled"]["p_value"]
    text = f"{p.median():.3g} ({int((p < 0.05).sum())}/{len(p)} seeds p < 0.05)"
    return f"pooled {pooled.iloc[0]:.2g}; per seed {text}" if len(pooled) else text


def paper(study) -> dict:
    """The paper's reported figures and claims (``studies/paper.yaml``), with their source."""
    import yaml

    if study.paper is None or not study.paper.is_file():
        return {"source": None, "figures": [], "claims": []}
    return yaml.safe_load(study.paper.read_text(encoding="utf-8"))


def beside_paper(study, tables: dict) -> pd.DataFrame:
    """Our text_only / image_text / original accuracy (%) beside the paper's reported figures,
    each row labelled with its source."""
    reported = paper(study)
    rows = []
    for f in reported["figures"]:
        rows.append({"dataset": f"{f['dataset']} (≈ {f['analog']})", "model": f["model"], "mode": f["mode"],
                     "overall %": f.get("overall"), "Type 1 %": f.get("type1"), "Type 2 %": f.get("type2"),
                     "source": "paper: " + reported["source"]})
    summary = main_rows(study, tables["summary"])
    if not summary.empty:
        summary = summary[summary["breakdown"].isin(["overall", "question_type"])]
        for (dataset, model, mode), g in summary.groupby(["dataset", "model", "mode"], sort=False):
            acc = dict(zip(g["group"], g["accuracy"]))
            rows.append({"dataset": dataset, "model": f"{model} (embedded)", "mode": mode,
                         "overall %": round(100 * acc.get("overall", np.nan), 2),
                         "Type 1 %": round(100 * acc.get("Type 1", np.nan), 2),
                         "Type 2 %": round(100 * acc.get("Type 2", np.nan), 2),
                         "source": f"this study ({study.profile} profile, model organism, mean of {g['seeds'].iloc[0]} seed(s))"})
    return pd.DataFrame(rows)


def effect(study, tables: dict, dataset: str, a: str = "text_only", b: str = "original",
           group: str = "overall") -> dict:
    """Accuracy of mode ``a`` and ``b`` on a dataset (first model, main comparison) and their
    difference in points, for the prose; NaN where absent."""
    summary = main_rows(study, tables["summary"])
    out = {"a": np.nan, "b": np.nan, "diff": np.nan}
    if summary.empty:
        return out
    rows = summary[(summary["dataset"] == dataset) & (summary["group"] == group)]
    if rows.empty:
        return out
    model = rows["model"].iloc[0]
    rows = rows[rows["model"] == model].set_index("mode")["accuracy"]
    out["a"], out["b"] = float(100 * rows.get(a, np.nan)), float(100 * rows.get(b, np.nan))
    out["diff"] = out["a"] - out["b"]
    return out


def glue_main(study, tables: dict, datasets=("wings", "heritage")) -> dict:
    """Glue the main page's numbers (accuracy in %, differences in points) for its prose."""
    from myst_nb import glue

    values = {}
    for d in datasets:
        for mode in ("original", "image_text", "text_only"):
            e = effect(study, tables, d, a=mode)
            values[f"{d}_{mode}"] = e["a"]
        values[f"{d}_text_only_gain"] = effect(study, tables, d, "text_only", "original")["diff"]
        values[f"{d}_image_text_gain"] = effect(study, tables, d, "image_text", "original")["diff"]
        values[f"{d}_text_vs_image"] = effect(study, tables, d, "text_only", "image_text")["diff"]
    values["seeds"] = int(tables["summary"]["seeds"].max()) if not tables["summary"].empty else 0
    for key, value in values.items():
        glue(key, value if isinstance(value, int) else float(value), display=False)  # not a numpy scalar
    return values


def breakdown_frame(study, tables: dict, breakdown: str) -> pd.DataFrame:
    """Main-comparison rows of one breakdown (question_type or category), accuracy in %."""
    frame = main_rows(study, tables["summary"])
    if frame.empty:
        return frame
    frame = frame[frame["breakdown"] == breakdown].copy()
    for c in ("accuracy", "low", "high"):
        frame[c] = 100 * frame[c]
    return in_study_order(study, frame)


def plot_accuracy(frame: pd.DataFrame, x: str, *, hue: str = "mode", col: str = "dataset",
                  title: str | None = None, sharex: bool = False, order=None):
    """Accuracy (%) per ``x`` and ``hue`` with the 95% intervals of the table, one panel per ``col``."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    hues = [h for h in (MODES if hue == "mode" else QUALITIES) if h in set(frame[hue])] or \
        sorted(frame[hue].dropna().unique())
    if "model" in frame and "model" not in (x, hue, col) and frame["model"].nunique() > 1:
        frame = frame.assign(panel=frame[col].astype(str) + " · " + frame["model"].astype(str))
        col = "panel"  # one panel per model too: bars never average over models
    panels = list(dict.fromkeys(frame[col]))
    n_x = max(frame.groupby(col)[x].nunique()) if len(frame) else 1
    width = max(4.8, 0.45 * n_x * max(1, len(hues)) / 1.5 + 1.5)
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), 3.8), squeeze=False, sharey=True)
    for ax, panel in zip(axes[0], panels):
        data = frame[frame[col] == panel]
        xs = order or list(dict.fromkeys(data[x]))
        sns.barplot(data=data, x=x, y="accuracy", hue=hue, order=xs, hue_order=hues, ax=ax, errorbar=None,
                    palette="colorblind")
        # seaborn makes a container per level of hue_order (empty where absent) holding a bar
        # for each x of ``order`` that this level has
        for bars, h in zip(ax.containers, hues):
            sub = data[data[hue] == h].set_index(x)
            for bar, xv in zip(bars, [v for v in xs if v in sub.index]):
                if not pd.isna(sub.loc[xv, "low"]):
                    centre = bar.get_x() + bar.get_width() / 2
                    ax.plot([centre, centre], [sub.loc[xv, "low"], sub.loc[xv, "high"]], color="black", lw=1)
        ax.axhline(100 * CHANCE, color="grey", ls="--", lw=1)
        ax.set_title(str(panel))
        ax.set_ylabel("accuracy (%)")
        ax.set_xlabel("")
        if len(xs) > 4 or max(len(str(v)) for v in xs) > 10:
            ax.tick_params(axis="x", rotation=30)
            for label in ax.get_xticklabels():
                label.set_horizontalalignment("right")
        ax.legend_.remove() if ax.legend_ else None
    handles, labels = axes[0][0].get_legend_handles_labels()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.legend(handles, labels, loc="center left", frameon=False, bbox_to_anchor=(1.0, 0.5), title=hue)
    return figure_png(fig)
