"""What every page of the book shares: the collected tables, the main comparison's rows,
the study's order, percentages with intervals, and HTML tables and PNG figures for notebooks."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from textonly.core.prompts import SCORINGS
from textonly.study.collect import order


def main_scoring(frame: pd.DataFrame) -> str:
    """The scoring of the main tables: ``option`` (the organism's) where the rows have it, else the
    first of :data:`~textonly.core.prompts.SCORINGS` they have (a hub study may score only by
    letter); the others are shown beside it."""
    present = set(frame["scoring"]) if "scoring" in frame else set()
    return next((s for s in SCORINGS if s in present), SCORINGS[0])


CHANCE = 0.25


def load_tables(study) -> dict[str, pd.DataFrame]:
    """The collected tables of a study profile, by short name (results, summary, comparisons, runs)."""
    out = {}
    for name in ("results", "summary", "comparisons", "runs"):
        path = study.dir / f"{name}.csv"
        out[name] = pd.read_csv(path) if path.is_file() and path.stat().st_size > 1 else pd.DataFrame()
    return out


def main_quality(study, dataset: str) -> str | None:
    """The description quality of the main comparison: ``full`` in the worlds; None for real
    data, whose descriptions are its describer's."""
    return "full" if "world" in study.datasets[dataset] else None


def main_rows(study, frame: pd.DataFrame, condition: str = "image", scoring: str | None = None) -> pd.DataFrame:
    """Rows of the main comparison: the image condition, the main scoring (:func:`main_scoring`
    unless given), the main quality."""
    if frame.empty:
        return frame
    keep = (frame["condition"] == condition) & (frame["scoring"] == (scoring or main_scoring(frame)))
    quality_ok = frame["quality"].isna() | (frame["quality"] == frame["dataset"].map(lambda d: main_quality(study, d)))
    return frame[keep & quality_ok]


def in_study_order(study, frame: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by dataset and model in the config's order, modes and qualities in the study's."""
    datasets, models = list(study.datasets), list(study.models)

    def key(column: pd.Series) -> pd.Series:
        if column.name == "dataset":
            return column.map(lambda v: datasets.index(v) if v in datasets else len(datasets))
        if column.name == "model":
            return column.map(lambda v: models.index(v) if v in models else len(models))
        return order(column)

    by = [c for c in ("dataset", "model", "mode", "quality", "seed") if c in frame.columns]
    return frame.sort_values(by, key=key, ignore_index=True, kind="stable") if len(frame) else frame


def pct(value: float, digits: int = 1) -> str:
    return "–" if value is None or pd.isna(value) else f"{100 * value:.{digits}f}"


def with_interval(row) -> str:
    return f"{pct(row['accuracy'])} [{pct(row['low'])}, {pct(row['high'])}]"


def html_table(frame: pd.DataFrame, float_format: str = "{:.3g}"):
    """A table for a page: no index column, floats shortened."""
    from IPython.display import HTML

    formatters = {c: float_format.format for c in frame.columns if pd.api.types.is_float_dtype(frame[c])}
    return HTML(frame.to_html(index=False, na_rep="–", formatters=formatters, escape=True, border=0))


def figure_png(fig, dpi: int = 110):
    """A finished figure as a PNG image for a notebook, closed: it shows the same under any
    matplotlib backend (another library may have switched pyplot to Agg)."""
    import matplotlib.pyplot as plt
    from IPython.display import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return Image(data=buffer.getvalue(), format="png")


def profile_note(study, tables: dict | None = None):
    """A line naming the study, profile and config a page was made from."""
    from IPython.display import Markdown

    text = f"*Study `{study.name}`, profile `{study.profile}` (config `{project_relative(study.config_path)}`)"
    if tables is not None and not tables["runs"].empty:
        text += f": {len(tables['runs'])} evaluations"
    return Markdown(text + ".*")


def project_relative(path: Path) -> str:
    from textonly.core.config import PROJECT_ROOT

    try:
        return str(Path(path).relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)
