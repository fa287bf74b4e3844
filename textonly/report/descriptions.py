"""The description-quality ablation: text_only accuracy per description quality beside
original and image_text."""

from __future__ import annotations

import pandas as pd

from textonly.report.common import main_scoring
from textonly.study.collect import order


def quality_frame(study, tables: dict) -> pd.DataFrame:
    """text_only accuracy (%) per description quality, on the datasets and models where more than
    one quality was trained, beside original and image_text of the same (image condition, main scoring)."""
    summary = tables["summary"]
    if summary.empty:
        return summary
    summary = summary[(summary["condition"] == "image") & (summary["scoring"] == main_scoring(summary))
                      & (summary["breakdown"] != "category")]
    text = summary[summary["mode"] == "text_only"]
    ablated = text.groupby(["dataset", "model"])["quality"].nunique()
    ablated = set(ablated[ablated > 1].index)
    keep = [(d, m) in ablated for d, m in zip(summary["dataset"], summary["model"])]
    frame = summary[keep].copy()  # a boolean list keeps the columns even when no row is kept
    for c in ("accuracy", "low", "high"):
        frame[c] = 100 * frame[c]
    frame["setting"] = [f"text_only, {q}" if m == "text_only" else m for m, q in zip(frame["mode"], frame["quality"])]
    return frame.sort_values(["dataset", "model", "mode", "quality"], key=order, ignore_index=True)


def quality_sentence(frame: pd.DataFrame):
    """The ablation's overall accuracy per setting, as a sentence for the page's prose."""
    from IPython.display import Markdown

    if frame.empty:
        return Markdown("no dataset was ablated in this profile")
    parts = []
    for (dataset, model), g in frame[frame["group"] == "overall"].groupby(["dataset", "model"], sort=False):
        values = ", ".join(f"{s} {a:.1f}%" for s, a in zip(g["setting"], g["accuracy"]))
        parts.append(f"on `{dataset}` with `{model}`: {values}")
    return Markdown("; ".join(parts))


def quality_table(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame
    frame = frame.assign(cell=[f"{a:.1f} [{lo:.1f}, {hi:.1f}]" for a, lo, hi in
                               zip(frame["accuracy"], frame["low"], frame["high"])])
    wide = frame.pivot_table(index=["dataset", "model", "setting", "seeds"], columns="group", values="cell",
                             aggfunc="first", sort=False)
    wide = wide.reindex(columns=[c for c in ("overall", "Type 1", "Type 2") if c in wide.columns])
    wide.columns.name = None
    return wide.reset_index()
