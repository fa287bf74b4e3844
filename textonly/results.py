"""The study's results as tidy tables, and the tables and figures the book's pages show.

:func:`tables` reads every finished evaluation of a study profile (``eval.json``,
``predictions.jsonl``) and its training run (``run.json``) into four tables, which
:func:`textonly.study.collect` writes as CSV:

* ``results.csv``: one row per evaluation and group (``breakdown`` overall, question_type
  or category), accuracy with its 95% bootstrap interval clustered by image;
* ``summary.csv``: the same over seeds: mean accuracy, an interval clustered by image on
  the per-question mean over seeds, and the spread of the seeds;
* ``comparisons.csv``: McNemar's exact test between modes on the same questions, per seed
  (text_only and image_text against original, text_only against image_text);
* ``runs.csv``: one row per evaluation with its costs: tokens, FLOPs, wall time, energy
  (and how it was obtained), peak memory, provenance.

The rest of the module turns those tables into what the book's notebooks display; the
notebooks call it and hold no logic of their own.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from textonly.fileio import read_jsonl
from textonly.prompts import LETTERS, SCORINGS

#: The scoring of the main tables (the organism's; the others are shown beside it).
MAIN_SCORING = "option"
KEYS = ["dataset", "model", "mode", "level", "seed", "condition", "scoring"]
GROUP_KEYS = ["dataset", "model", "mode", "level", "condition", "scoring"]
MODE_ORDER = ["original", "image_text", "text_only", "mixed"]
LEVEL_ORDER = ["full", "partial", "wrong", "name_only"]
CHANCE = 0.25
#: Pairs compared with McNemar's test: (mode A, mode B).
PAIRS = [("image_text", "original"), ("text_only", "original"), ("mixed", "original"),
         ("text_only", "image_text")]


# --- collecting -----------------------------------------------------------------------

def _cell_row(step) -> dict:
    p = step.parameters
    return {"dataset": p["dataset"], "model": p["model"], "mode": p["mode"], "level": p["level"],
            "seed": p["seed"], "condition": p["condition"], "scoring": p["scoring"]}


def _groups(metrics: dict) -> list[tuple[str, str, dict]]:
    rows = [("overall", "overall", metrics["overall"])]
    rows += [("question_type", f"Type {k}", v) for k, v in sorted(metrics["question_type"].items())]
    rows += [("category", k, v) for k, v in sorted(metrics["category"].items())]
    return rows


def model_parameters(model_path: str) -> dict:
    """Parameter counts of an embedded base model's parts and its image tokens (empty for a hub id)."""
    path = Path(model_path) / "pretrain_config.json"
    if not path.is_file():
        return {}
    config = json.loads(path.read_text())
    return {**config["parameters"], "image_tokens": config["image_tokens"]}


def train_flops(text_tokens: float, image_tokens: float, params: dict) -> float:
    """Training FLOPs by parameter count: 4 x parameters x tokens through the LoRA-tuned language
    model (forward, and the input gradient of its frozen weights), 6 x through the projector
    trained in full (forward and both gradients), 2 x parameters x positions through the
    frozen vision tower (forward only; each image has ``image_tokens`` patches and a class
    token). Attention's quadratic term and the small LoRA matrices are left out; the exact
    per-sample formula, checked against torch's FLOP counter, is :func:`textonly.cost.training_flops`."""
    if not params:
        return float("nan")
    images = image_tokens / params["image_tokens"]
    return (4.0 * params["language_model"] * (text_tokens + image_tokens)
            + 6.0 * params["multi_modal_projector"] * image_tokens
            + 2.0 * params["vision_tower"] * (image_tokens + images))


def eval_flops(tokens: dict | None, params: dict) -> float:
    """Evaluation FLOPs: 2 x parameters x tokens (a forward pass), where the evaluation counted its tokens."""
    if not params or not tokens:
        return float("nan")
    images = tokens.get("image", 0) / params["image_tokens"]
    return (2.0 * (params["language_model"] + params["multi_modal_projector"]) * (tokens.get("text", 0)
            + tokens.get("image", 0)) + 2.0 * params["vision_tower"] * (tokens.get("image", 0) + images))


def _finished(study, stage: str) -> list:
    from textonly.study import _recorded

    return [s for s in study.steps.values() if s.stage == stage and _recorded(study, s) is not None]


def tables(study) -> dict[str, pd.DataFrame]:
    """The four tidy tables of a study profile, from its finished evaluations."""
    from textonly.data import load_dataset

    results, runs, correct = [], [], {}
    images: dict[str, dict[str, str]] = {}
    for step in _finished(study, "evaluate"):
        cell = _cell_row(step)
        ev = json.loads((step.dir / "eval.json").read_text())
        for breakdown, group, m in _groups(ev["metrics"]):
            results.append({**cell, "breakdown": breakdown, "group": group, **{k: m[k] for k in
                                                                               ("accuracy", "low", "high", "n")}})
        predictions = read_jsonl(step.dir / "predictions.jsonl")
        correct[step.run_id] = (cell, {p["id_"]: (bool(p["correct"]), p["question_type"], p["category"])
                                       for p in predictions})
        if cell["dataset"] not in images:
            test = study.split(cell["dataset"], "test")
            images[cell["dataset"]] = {r["id_"]: r["image_path"] or r["id_"]
                                       for r in load_dataset(test, check_images=False).records}
        runs.append(_run_row(study, step, cell, ev))
    frames = {
        "results.csv": pd.DataFrame(results, columns=[*KEYS, "breakdown", "group", "accuracy", "low", "high", "n"]),
        "summary.csv": _summary(correct, images, pd.DataFrame(results)),
        "comparisons.csv": _comparisons(correct),
        "runs.csv": pd.DataFrame(runs),
    }
    for name in ("results.csv", "runs.csv"):
        if len(frames[name]):
            frames[name] = frames[name].sort_values(KEYS, key=_order, ignore_index=True)
    return frames


def _order(column: pd.Series) -> pd.Series:
    """Sort key: modes and levels in the study's order, everything else as it is."""
    if column.name == "mode":
        return column.map({m: i for i, m in enumerate(MODE_ORDER)})
    if column.name == "level":
        return column.map(lambda v: LEVEL_ORDER.index(v) if v in LEVEL_ORDER else -1 if v is None else 9)
    if column.name == "seed":
        return column.fillna(-1)
    return column


def in_study_order(study, frame: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by dataset and model in the config's order, modes and levels in the study's."""
    datasets, models = list(study.datasets), list(study.models)

    def key(column: pd.Series) -> pd.Series:
        if column.name == "dataset":
            return column.map(lambda v: datasets.index(v) if v in datasets else len(datasets))
        if column.name == "model":
            return column.map(lambda v: models.index(v) if v in models else len(models))
        return _order(column)

    by = [c for c in ("dataset", "model", "mode", "level", "seed") if c in frame.columns]
    return frame.sort_values(by, key=key, ignore_index=True, kind="stable") if len(frame) else frame


def _run_row(study, step, cell: dict, ev: dict) -> dict:
    from textonly.study import _run_id

    params = model_parameters(study.model_path(cell["model"]))
    row = {**cell, "eval_dir": str(step.dir.relative_to(study.dir)), "train_dir": None,
           "eval_seconds": ev["energy"]["seconds"], "eval_energy_kwh": ev["energy"].get("energy_kwh"),
           "eval_energy_mode": ev["energy"].get("energy_mode"), "eval_questions": ev["questions"],
           "eval_flops": eval_flops(ev.get("tokens"), params),
           "parse_failure_rate": ev.get("parse_failure_rate"),
           "parameters": params.get("total"), "device": _device(ev["provenance"]["device"]),
           "git_commit": ev["provenance"].get("git_commit"),
           "textonly": ev["provenance"]["packages"].get("textonly")}
    if cell["mode"] != "original":
        train_step = study.steps[_run_id("train", **{k: cell[k] for k in ("dataset", "model", "mode", "seed",
                                                                           "level")})]
        run = json.loads((train_step.dir / "run.json").read_text())
        tokens = run["tokens"]
        row.update({
            "train_dir": str(train_step.dir.relative_to(study.dir)), "train_steps": run["steps"],
            "train_epochs": run["epochs"], "train_samples": run["samples"],
            "answer_format": run.get("config", {}).get("answer_format"),
            "train_text_tokens": tokens["text"], "train_image_tokens": tokens["image"],
            "train_flops": train_flops(tokens["text"], tokens["image"], params),
            "train_seconds": run["wall_seconds"], "train_energy_kwh": run["energy"].get("energy_kwh"),
            "train_energy_mode": run["energy"].get("energy_mode"),
            "train_gpu_energy_kwh_nvml": run["energy"].get("gpu_energy_kwh_nvml"),
            "train_peak_rss_mb": run["peak_memory_mb"].get("process_rss"),
            "train_peak_gpu_mb": run["peak_memory_mb"].get("gpu"),
            "trainable_parameters": run.get("trainable_parameters"), "final_loss": run.get("final_loss")})
    return row


def _device(device: dict) -> str:
    return device.get("gpu") or f"CPU ({device.get('cpu')}, {device.get('torch_threads')} threads)"


def _summary(correct: dict, images: dict, results: pd.DataFrame) -> pd.DataFrame:
    """Accuracy over seeds per group: the mean, a 95% interval clustered by image on each
    question's share of correct seeds, and the spread of the seeds' accuracies."""
    from textonly.stats import clustered_bootstrap_ci

    by_group: dict[tuple, list[dict]] = {}
    for cell, answers in correct.values():
        by_group.setdefault(tuple(cell[k] for k in GROUP_KEYS), []).append(answers)
    rows = []
    for key, seeds in by_group.items():
        cell = dict(zip(GROUP_KEYS, key))
        ids = sorted(seeds[0])
        share = np.array([np.mean([s[i][0] for s in seeds]) for i in ids])
        qtype = np.array([f"Type {seeds[0][i][1]}" for i in ids])
        category = np.array([str(seeds[0][i][2]) for i in ids])
        clusters = np.array([images[cell["dataset"]].get(i, i) for i in ids], dtype=object)
        mask = np.ones(len(results), bool)
        for k in GROUP_KEYS:
            column = results[k]
            mask &= (column.isna() if cell[k] is None else column.astype(object).eq(cell[k])).to_numpy()
        per_seed = results[mask]
        groups = [("overall", "overall", np.ones(len(ids), bool))]
        groups += [("question_type", t, qtype == t) for t in sorted(set(qtype))]
        groups += [("category", c, category == c) for c in sorted(set(category))]
        for breakdown, group, select in groups:
            acc, low, high = clustered_bootstrap_ci(share[select], clusters[select])
            accs = per_seed[(per_seed["breakdown"] == breakdown) & (per_seed["group"] == group)]["accuracy"]
            rows.append({**cell, "breakdown": breakdown, "group": group, "seeds": len(seeds), "accuracy": acc,
                         "low": low, "high": high, "n": int(select.sum()),
                         "seed_sd": float(accs.std(ddof=1)) if len(accs) > 1 else float("nan"),
                         "seed_min": float(accs.min()), "seed_max": float(accs.max())})
    columns = [*GROUP_KEYS, "breakdown", "group", "seeds", "accuracy", "low", "high", "n", "seed_sd", "seed_min",
               "seed_max"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values(GROUP_KEYS, key=_order, ignore_index=True, kind="stable") if len(frame) else frame


def _comparisons(correct: dict) -> pd.DataFrame:
    """McNemar's exact test for each pair of :data:`PAIRS` on the same seed (original has none)."""
    from textonly.stats import mcnemar

    cells = list(correct.values())
    rows = []
    for cell_a, answers_a in cells:
        for cell_b, answers_b in cells:
            if (cell_a["mode"], cell_b["mode"]) not in PAIRS or any(
                    cell_a[k] != cell_b[k] for k in ("dataset", "model", "condition", "scoring")):
                continue
            if cell_b["mode"] != "original" and cell_a["seed"] != cell_b["seed"]:
                continue
            for group, keep in [("overall", None), ("Type 1", 1), ("Type 2", 2)]:
                a = {i: c for i, (c, t, _) in answers_a.items() if keep is None or t == keep}
                b = {i: c for i, (c, t, _) in answers_b.items() if keep is None or t == keep}
                if not a:
                    continue
                test = mcnemar(a, b)
                rows.append({**{k: cell_a[k] for k in ("dataset", "model", "condition", "scoring", "seed")},
                             "a": cell_a["mode"], "a_level": cell_a["level"], "b": cell_b["mode"],
                             "b_level": cell_b["level"], "group": group, "a_accuracy": np.mean(list(a.values())),
                             "b_accuracy": np.mean(list(b.values())), **test})
    rows += _pooled(cells)
    columns = ["dataset", "model", "condition", "scoring", "seed", "a", "a_level", "b", "b_level", "group",
               "a_accuracy", "b_accuracy", "n", "a_only", "b_only", "p_value"]
    return pd.DataFrame(rows, columns=columns)


def _pooled(cells: list) -> list[dict]:
    """McNemar's test pooled over seeds: every (seed, question) is one pair; a seedless
    ``original`` is paired with each seed of the other mode. Rows have ``seed`` = ``pooled``."""
    from textonly.stats import mcnemar

    def key(cell):
        return tuple(cell[k] for k in ("dataset", "model", "condition", "scoring", "mode", "level"))

    by_key: dict[tuple, dict] = {}
    for cell, answers in cells:
        by_key.setdefault(key(cell), {})[cell["seed"]] = answers
    rows = []
    for ka, seeds_a in by_key.items():
        for kb, seeds_b in by_key.items():
            if (ka[4], kb[4]) not in PAIRS or ka[:4] != kb[:4] or len(seeds_a) < 2:
                continue
            for group, keep in [("overall", None), ("Type 1", 1), ("Type 2", 2)]:
                a, b = {}, {}
                for seed, answers in seeds_a.items():
                    other = seeds_b.get(seed) if kb[4] != "original" else next(iter(seeds_b.values()))
                    if other is None:
                        continue
                    for i, (c, t, _) in answers.items():
                        if keep is None or t == keep:
                            a[(seed, i)], b[(seed, i)] = c, other[i][0]
                if not a:
                    continue
                rows.append({"dataset": ka[0], "model": ka[1], "condition": ka[2], "scoring": ka[3], "seed": "pooled",
                             "a": ka[4], "a_level": ka[5], "b": kb[4], "b_level": kb[5], "group": group,
                             "a_accuracy": np.mean(list(a.values())), "b_accuracy": np.mean(list(b.values())),
                             **mcnemar(a, b)})
    return rows


# --- reading ----------------------------------------------------------------------------

def load_tables(study) -> dict[str, pd.DataFrame]:
    """The collected tables of a study profile, by short name (results, summary, comparisons, runs)."""
    out = {}
    for name in ("results", "summary", "comparisons", "runs"):
        path = study.dir / f"{name}.csv"
        out[name] = pd.read_csv(path) if path.is_file() and path.stat().st_size > 1 else pd.DataFrame()
    return out


def main_level(study, dataset: str) -> str:
    """The description level of the main comparison: ``full`` in the worlds, else the describer."""
    spec = study.datasets[dataset]
    return "full" if "world" in spec else spec["describer"]


def _main_rows(study, frame: pd.DataFrame, condition: str = "image", scoring: str = MAIN_SCORING) -> pd.DataFrame:
    """Rows of the main comparison: the image condition, the main scoring, the main level."""
    if frame.empty:
        return frame
    keep = (frame["condition"] == condition) & (frame["scoring"] == scoring)
    level_ok = frame["level"].isna() | (frame["level"] == frame["dataset"].map(lambda d: main_level(study, d)))
    return frame[keep & level_ok]


def pct(value: float, digits: int = 1) -> str:
    return "–" if value is None or pd.isna(value) else f"{100 * value:.{digits}f}"


def _with_interval(row) -> str:
    return f"{pct(row['accuracy'])} [{pct(row['low'])}, {pct(row['high'])}]"


def main_table(study, tables: dict) -> pd.DataFrame:
    """Dataset x model x mode: overall, Type 1 and Type 2 accuracy (%, 95% interval clustered by
    image, mean over seeds), the seeds, and McNemar's test against ``original`` per seed."""
    summary = _main_rows(study, tables["summary"])
    if summary.empty:
        return pd.DataFrame()
    summary = summary[summary["breakdown"].isin(["overall", "question_type"])]
    wide = summary.assign(cell=summary.apply(_with_interval, axis=1)).pivot_table(
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
        rows = _main_rows(study, summary, scoring=scoring)
        rows = rows[rows["breakdown"].isin(["overall", "question_type"])]
        wide = rows.assign(cell=rows.apply(_with_interval, axis=1)).pivot_table(
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
    rows = _main_rows(study, comparisons.rename(columns={"a_level": "level"}))
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
    summary = _main_rows(study, tables["summary"])
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
    summary = _main_rows(study, tables["summary"])
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


# --- figures --------------------------------------------------------------------------------

def figure_png(fig, dpi: int = 110):
    """A finished figure as a PNG image for a notebook, closed: it shows the same under any
    matplotlib backend (another library may have switched pyplot to Agg)."""
    import matplotlib.pyplot as plt
    from IPython.display import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return Image(data=buffer.getvalue(), format="png")


# --- breakdowns ---------------------------------------------------------------------------

def breakdown_frame(study, tables: dict, breakdown: str) -> pd.DataFrame:
    """Main-comparison rows of one breakdown (question_type or category), accuracy in %."""
    frame = _main_rows(study, tables["summary"])
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
    hues = [h for h in (MODE_ORDER if hue == "mode" else LEVEL_ORDER) if h in set(frame[hue])] or \
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


# --- cost -----------------------------------------------------------------------------------

def cost_table(tables: dict) -> pd.DataFrame:
    """Per dataset, model, mode and level (mean over seeds): training tokens, FLOPs, wall time,
    energy and peak memory; the evaluation's wall time and energy."""
    runs = tables["runs"]
    if runs.empty:
        return runs
    runs = runs[(runs["condition"] == "image") & (runs["scoring"] == MAIN_SCORING)].copy()
    for c in ("train_seconds", "train_energy_kwh", "train_text_tokens", "train_image_tokens", "train_flops",
              "train_peak_rss_mb"):
        if c not in runs:
            runs[c] = np.nan
    runs["level"] = runs["level"].fillna("")
    agg = runs.groupby(["dataset", "model", "mode", "level"], sort=False).agg(
        runs=("eval_dir", "count"), text_tokens=("train_text_tokens", "mean"),
        image_tokens=("train_image_tokens", "mean"), train_pflop=("train_flops", lambda s: s.mean() / 1e15),
        train_s=("train_seconds", "mean"), train_wh=("train_energy_kwh", lambda s: 1000 * s.mean()),
        peak_mb=("train_peak_rss_mb", "mean"), eval_s=("eval_seconds", "mean"),
        eval_wh=("eval_energy_kwh", lambda s: 1000 * s.mean()))
    return agg.reset_index().sort_values(["dataset", "model", "mode", "level"], key=_order, ignore_index=True)


def energy_modes(tables: dict) -> str:
    """How the energy figures were obtained, over all runs (measured or estimated)."""
    runs = tables["runs"]
    modes = set()
    for c in ("train_energy_mode", "eval_energy_mode"):
        if c in runs:
            modes |= {str(v) for v in runs[c].dropna()}
    return "; ".join(sorted(modes)) or "not recorded"


def cost_ratio(tables: dict, dataset: str, column: str, a: str = "text_only", b: str = "image_text") -> float:
    """Mean ``column`` of mode ``a`` over mode ``b`` (main level, image condition) on a dataset."""
    costs = cost_table(tables)
    if costs.empty or column not in costs:
        return float("nan")
    rows = costs[(costs["dataset"] == dataset) & costs["level"].isin(["", "full"])]
    values = rows.groupby("mode")[column].mean()
    return float(values.get(a, np.nan) / values.get(b, np.nan))


def plot_costs(tables: dict):
    """Training wall time, energy, tokens and FLOPs per mode (mean over seeds, bars; seeds as points)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    runs = tables["runs"]
    runs = runs[(runs["mode"] != "original") & (runs["condition"] == "image") & (runs["scoring"] == MAIN_SCORING)
                & runs["level"].fillna("full").eq("full")].copy()
    runs["train_wh"] = 1000 * runs["train_energy_kwh"]
    runs["train_tokens"] = runs["train_text_tokens"] + runs["train_image_tokens"]
    runs["train_pflop"] = runs["train_flops"] / 1e15
    panels = [("train_seconds", "wall time (s)"), ("train_wh", "energy (Wh)"), ("train_tokens", "tokens"),
              ("train_pflop", "FLOPs (PFLOP)")]
    fig, axes = plt.subplots(2, 2, figsize=(9, 6.4))
    axes = axes.ravel()
    hues = [m for m in MODE_ORDER if m in set(runs["mode"])]
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


# --- description quality --------------------------------------------------------------------

def quality_frame(study, tables: dict) -> pd.DataFrame:
    """text_only accuracy (%) per description level, on the datasets and models where more than
    one level was trained, beside original and image_text of the same (image condition, main scoring)."""
    summary = tables["summary"]
    if summary.empty:
        return summary
    summary = summary[(summary["condition"] == "image") & (summary["scoring"] == MAIN_SCORING)
                      & (summary["breakdown"] != "category")]
    text = summary[summary["mode"] == "text_only"]
    ablated = text.groupby(["dataset", "model"])["level"].nunique()
    ablated = set(ablated[ablated > 1].index)
    keep = summary.apply(lambda r: (r["dataset"], r["model"]) in ablated, axis=1) if len(summary) else []
    frame = summary[keep].copy()
    for c in ("accuracy", "low", "high"):
        frame[c] = 100 * frame[c]
    frame["setting"] = [f"text_only, {lvl}" if m == "text_only" else m for m, lvl in zip(frame["mode"], frame["level"])]
    return frame.sort_values(["dataset", "model", "mode", "level"], key=_order, ignore_index=True)


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


# --- the worlds and the base model ----------------------------------------------------------

def world_splits(study, world: str) -> pd.DataFrame:
    """Questions and images per split of a world, by question type."""
    rows = []
    for split in ("train", "test", "pretrain", "pretrain_eval"):
        records = read_jsonl(study.world_dir(world) / split / "annotations.jsonl")
        row = {"split": split, "questions": len(records),
               "images": len({r["image_path"] for r in records if r["image_path"]})}
        for t in (0, 1, 2):
            row[f"type {t}"] = sum(r["question_type"] == t for r in records)
        rows.append(row)
    return pd.DataFrame(rows)


def world_counts(study, world: str) -> dict:
    """Counts of a world for the prose: kinds, targets, look-alike groups, categories, questions."""
    info = json.loads((study.world_dir(world) / "world.json").read_text())
    species = info["species"]
    splits = world_splits(study, world).set_index("split")
    return {"kinds": len(species), "targets": sum(s["role"] == "target" for s in species),
            "groups": len({s["group"] for s in species}), "categories": len(info["categories"]),
            "attributes": len(info["attributes"]), "train": int(splits.loc["train", "questions"]),
            "test": int(splits.loc["test", "questions"]), "test_type1": int(splits.loc["test", "type 1"]),
            "test_type2": int(splits.loc["test", "type 2"])}


def description_examples(study, world: str, k: int = 3) -> pd.DataFrame:
    """The first ``k`` training samples' descriptions at each quality level."""
    records = read_jsonl(study.world_dir(world) / "train" / "annotations.jsonl")[:k]
    rows = []
    for r in records:
        for level in LEVEL_ORDER:
            rows.append({"subject": r.get("subject"), "level": level, "description": r["descriptions"].get(level)})
    return pd.DataFrame(rows)


def lookalike_grid(study, world: str, groups: int = 3, per_kind: int = 2):
    """Test images of the targets of a few look-alike groups: one row per group, labelled."""
    from PIL import Image, ImageDraw

    root = study.world_dir(world)
    info = json.loads((root / "world.json").read_text())
    group_of = {s["name"]: s["group"] for s in info["species"] if s["role"] == "target"}
    records = [r for r in read_jsonl(root / "test" / "annotations.jsonl") if r["question_type"] == 1]
    by_group: dict[int, dict[str, list[str]]] = {}
    for r in records:
        g = group_of.get(r["subject"])
        if g is not None:
            by_group.setdefault(g, {}).setdefault(r["subject"], []).append(r["image_path"])
    chosen = sorted(by_group, key=lambda g: -len(by_group[g]))[:groups]
    columns = max(len(by_group[g]) for g in chosen) * per_kind
    tile, label = 96, 14
    grid = Image.new("RGB", (columns * tile, len(chosen) * (tile + label)), "white")
    draw = ImageDraw.Draw(grid)
    for row, g in enumerate(chosen):
        col = 0
        for name, paths in sorted(by_group[g].items()):
            for path in sorted(set(paths))[:per_kind]:
                with Image.open(root / "test" / "images" / path) as im:
                    grid.paste(im.convert("RGB").resize((tile, tile), Image.NEAREST),
                               (col * tile, row * (tile + label)))
                draw.text((col * tile + 2, row * (tile + label) + tile), name[:16], fill="black")
                col += 1
    return grid


def base_model_summary(study, model: str) -> dict:
    """Parameters, schedule, throughput and encoder of a pretrained base model."""
    config = json.loads((Path(study.model_path(model)) / "pretrain_config.json").read_text())
    return {"size": config["config"]["size"], "parameters": config["parameters"], "steps": config["steps"],
            "image_tokens": config["image_tokens"], "throughput": config["throughput"],
            "threads": config.get("torch_threads"), "encoder": config["encoder"],
            "appearance_in_text": len(config.get("targets_with_appearance_in_text", []))}


def encoder_dir(study, model: str) -> Path:
    """The CLIP encoder folder whose vision tower a pretrained base model took."""
    base = Path(study.model_path(model))
    return base.parent / json.loads((base / "pretrain_config.json").read_text())["encoder"]["folder"]


def encoder_summary(study, model: str) -> dict:
    """The encoder's settings, sizes, images and seconds (its ``encoder_config.json``)."""
    return json.loads((encoder_dir(study, model) / "encoder_config.json").read_text())


def encoder_table(study, model: str) -> pd.DataFrame:
    """What the encoder sees: zero-shot and linear-probe accuracy (%) per attribute, with 95% intervals."""
    report = json.loads((encoder_dir(study, model) / "report.json").read_text())
    rows = []
    for world, parts in report.items():
        for attr, zero in parts["zero_shot"].items():
            probe = parts["linear_probe"][attr]
            rows.append({"world": world, "attribute": attr, "zero-shot %": _with_interval(zero),
                         "linear probe, pooled %": _with_interval(probe),
                         "linear probe, patches %": _with_interval(parts["patch_probe"][attr]), "n": zero["n"]})
    return pd.DataFrame(rows)


#: The competence the study needs of its base model (the organism issue's targets).
COMPETENCE = {"attributes_mean": 0.90, "attributes_min": 0.75, "knowledge": 0.90}


def competence(study, model: str) -> pd.DataFrame:
    """Per world: the mean and the lowest attribute accuracy and the knowledge accuracy (option
    scoring), each against its target (:data:`COMPETENCE`)."""
    path = Path(study.model_path(model)) / "report.json"
    if not path.is_file():
        return pd.DataFrame()
    rows = []
    for world, parts in json.loads(path.read_text()).items():
        attrs = {k: v for k, v in parts["attributes"].items() if k != "overall"}
        lowest = min(attrs, key=lambda k: attrs[k]["accuracy"])
        mean = float(np.mean([v["accuracy"] for v in attrs.values()]))
        knowledge = parts["knowledge"]["overall"]
        rows += [
            {"world": world, "measure": "attributes, mean over attributes", "accuracy %": pct(mean),
             "target %": pct(COMPETENCE["attributes_mean"], 0), "met": mean >= COMPETENCE["attributes_mean"]},
            {"world": world, "measure": f"attributes, lowest ({lowest})", "accuracy %": _with_interval(attrs[lowest]),
             "target %": pct(COMPETENCE["attributes_min"], 0),
             "met": attrs[lowest]["accuracy"] >= COMPETENCE["attributes_min"]},
            {"world": world, "measure": "knowledge of pretraining kinds", "accuracy %": _with_interval(knowledge),
             "target %": pct(COMPETENCE["knowledge"], 0), "met": knowledge["accuracy"] >= COMPETENCE["knowledge"]},
        ]
    return pd.DataFrame(rows)


def plot_pretraining(study, model: str):
    """The encoder's contrastive loss, and the VLM's loss per step coloured by stage."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    curves = pd.DataFrame(read_jsonl(Path(study.model_path(model)) / "curves.jsonl"))
    encoder = pd.DataFrame(read_jsonl(encoder_dir(study, model) / "curves.jsonl"))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.4))
    if len(encoder):
        encoder["loss (mean of 50 steps)"] = encoder.groupby("world")["loss"].transform(
            lambda x: x.rolling(50, min_periods=1).mean())
        sns.lineplot(data=encoder, x="step", y="loss (mean of 50 steps)", hue="world", ax=left)
    left.set_title("vision encoder (CLIP, contrastive)")
    sns.scatterplot(data=curves, x="step", y="loss", hue="phase", s=8, linewidth=0, ax=right,
                    hue_order=[p for p in ("language", "alignment", "instruction") if p in set(curves["phase"])])
    right.set_yscale("log")
    right.set_ylabel("training loss")
    right.set_title("VLM (tower frozen)")
    fig.tight_layout()
    return figure_png(fig)


def knowledge_table(study, model: str) -> pd.DataFrame:
    """What the base model knows (its ``report.json``): accuracy (%) with 95% intervals per probe."""
    from textonly.cards import probe_label

    path = Path(study.model_path(model)) / "report.json"
    if not path.is_file():
        return pd.DataFrame()
    rows = []
    for world, parts in json.loads(path.read_text()).items():
        for part, table in parts.items():
            for group, cell in table.items():
                label = f"Type {group}" if part.startswith("original") and group != "overall" else group
                rows.append({"world": world, "probe": probe_label(part), "group": label,
                             "accuracy %": pct(cell["accuracy"]), "95% CI": f"[{pct(cell['low'])}, {pct(cell['high'])}]",
                             "n": cell["n"], "above chance": bool(cell["low"] > CHANCE)})
    return pd.DataFrame(rows)


# --- the explorer -----------------------------------------------------------------------------

def _image_tag(path: Path, size: int = 96) -> str:
    from PIL import Image

    with Image.open(path) as im:
        buffer = io.BytesIO()
        im.convert("RGB").resize((size, size), Image.NEAREST).save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img src="data:image/png;base64,{data}" width="{size}" height="{size}" alt="test image">'


def explore(study, tables: dict, *, dataset: str, model: str | None = None, seed: int = 0, n: int = 12,
            only: str = "disagree", level: str | None = None) -> str:
    """An HTML table of test questions: image, question, options (the answer marked), the
    description, and each mode's prediction (image condition, main scoring, one seed).
    ``only``: ``disagree`` (modes differ), ``wrong`` (text_only wrong) or ``all``."""
    runs = tables["runs"]
    if runs.empty:
        return "<p>No finished evaluation yet.</p>"
    runs = runs[(runs["dataset"] == dataset) & (runs["condition"] == "image") & (runs["scoring"] == MAIN_SCORING)]
    model = model or (runs["model"].iloc[0] if len(runs) else None)
    level = level or main_level(study, dataset)
    runs = runs[(runs["model"] == model) & (runs["seed"].isna() | (runs["seed"] == seed))
                & (runs["level"].isna() | (runs["level"] == level))]
    predictions = {}
    for _, r in runs.sort_values("mode", key=_order).iterrows():
        predictions[r["mode"]] = {p["id_"]: p for p in read_jsonl(study.dir / r["eval_dir"] / "predictions.jsonl")}
    if not predictions:
        return f"<p>No evaluation of {html.escape(str(model))} on {html.escape(dataset)}.</p>"
    test = study.split(dataset, "test")
    records = read_jsonl(test / "annotations.jsonl")
    modes = list(predictions)
    preferred, rest = [], []
    for r in records:
        got = [predictions[m].get(r["id_"]) for m in modes]
        if any(g is None for g in got):
            continue
        if only == "disagree":
            picked = len({g["prediction"] for g in got}) > 1
        elif only == "wrong":
            picked = not predictions.get("text_only", {}).get(r["id_"], {}).get("correct", True)
        else:
            picked = True
        (preferred if picked else rest).append(r)
    # too few questions pass the filter (a model that always answers alike): fill with the rest
    chosen = preferred[:n] + rest[: max(0, n - len(preferred))]
    head = "".join(f"<th>{html.escape(m)}</th>" for m in modes)
    rows = []
    for r in chosen:
        options = "<br>".join(("<b>" if i == r["answer"] else "") + f"{LETTERS[i]}. {html.escape(o)}"
                              + ("</b>" if i == r["answer"] else "") for i, o in enumerate(r["options"]))
        description = html.escape((r.get("descriptions") or {}).get(level.removeprefix("oracle-"), "–"))
        cells = []
        for m in modes:
            p = predictions[m][r["id_"]]
            letter = LETTERS[p["prediction"]] if p["prediction"] is not None else "?"
            cells.append(f"<td>{letter} {'✓' if p['correct'] else '✗'}</td>")
        image = _image_tag(test / "images" / r["image_path"]) if r["image_path"] else "–"
        rows.append(f"<tr><td>{image}</td><td>Type {r['question_type']}: {html.escape(r['question'])}<br>{options}</td>"
                    f"<td style='min-width:16em;font-size:0.85em'>{description}</td>{''.join(cells)}</tr>")
    caption = (f"{len(chosen)} question(s) of <code>{html.escape(dataset)}</code>, model "
               f"<code>{html.escape(str(model))}</code>, seed {seed}: {min(len(preferred), n)} of them pass the "
               f"filter <code>{html.escape(only)}</code> (of {len(preferred)} that do); the correct option in bold")
    return (f"<table class='explorer'><caption>{caption}</caption><thead><tr><th>image</th><th>question</th>"
            f"<th>description ({html.escape(level)})</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


# --- the pipeline notebooks ------------------------------------------------------------------

def html_table(frame: pd.DataFrame, float_format: str = "{:.3g}"):
    """A table for a page: no index column, floats shortened."""
    from IPython.display import HTML

    formatters = {c: float_format.format for c in frame.columns if pd.api.types.is_float_dtype(frame[c])}
    return HTML(frame.to_html(index=False, na_rep="–", formatters=formatters, escape=True, border=0))


def metrics_frame(evaluation: dict) -> pd.DataFrame:
    """An evaluation's accuracy (%) per group with its 95% interval clustered by image."""
    rows = [{"breakdown": b, "group": g, "accuracy %": pct(m["accuracy"]),
             "95% CI": f"[{pct(m['low'])}, {pct(m['high'])}]", "n": m["n"]}
            for b, g, m in _groups(evaluation["metrics"])]
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


def profile_note(study, tables: dict | None = None):
    """A line naming the study, profile and config a page was made from."""
    from IPython.display import Markdown

    text = f"*Study `{study.name}`, profile `{study.profile}` (config `{_project_relative(study.config_path)}`)"
    if tables is not None and not tables["runs"].empty:
        text += f": {len(tables['runs'])} evaluations"
    return Markdown(text + ".*")


def _project_relative(path: Path) -> str:
    from textonly.config import PROJECT_ROOT

    try:
        return str(Path(path).relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


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
