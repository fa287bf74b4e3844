"""The pipeline notebooks' views of one run: an evaluation's metrics, a training run's
summary and loss curve."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from textonly.core.fileio import read_jsonl
from textonly.report.common import figure_png, pct
from textonly.study.collect import groups


def metrics_frame(evaluation: dict) -> pd.DataFrame:
    """An evaluation's accuracy (%) per group with its 95% interval clustered by image."""
    rows = [{"breakdown": b, "group": g, "accuracy %": pct(m["accuracy"]),
             "95% CI": f"[{pct(m['low'])}, {pct(m['high'])}]", "n": m["n"]}
            for b, g, m in groups(evaluation["metrics"])]
    return pd.DataFrame(rows)


def run_frame(run: dict) -> pd.DataFrame:
    """A training run's summary: steps, loss, tokens, time, energy (with how it was obtained), memory."""
    energy = run["energy"]
    items = {"steps": run["steps"], "epochs": run["epochs"], "samples": run["samples"],
             "final loss": run["final_loss"], "text tokens": run["tokens"]["text"],
             "image tokens": run["tokens"]["image"], "wall time (s)": run["wall_seconds"],
             "energy (Wh)": None if energy.get("energy_kwh") is None else 1000 * energy["energy_kwh"],
             "energy obtained by": energy.get("energy_mode"),
             "peak memory (MB, process)": run["peak_memory_mb"].get("process_rss"),
             "trainable parameters": run.get("trainable_parameters")}
    return pd.DataFrame({"": list(items), "value": [str(v) for v in items.values()]})


def plot_training(run_dir: str | Path):
    """A fine-tuning run's loss per optimizer step."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    curves = pd.DataFrame(read_jsonl(Path(run_dir) / "curves.jsonl"))
    fig, ax = plt.subplots(figsize=(6, 3))
    if len(curves):
        sns.lineplot(data=curves, x="step", y="loss", ax=ax, marker="o" if len(curves) < 20 else None)
    ax.set_ylabel("training loss")
    fig.tight_layout()
    return figure_png(fig)
