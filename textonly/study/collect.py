"""The study's results collected into tidy tables, and published where the book reads them.

:func:`tables` reads every finished evaluation of a study profile (``eval.json``,
``predictions.jsonl``) and its training run (``run.json``) into four tables, which
:func:`collect` writes as CSV:

* ``results.csv``: one row per evaluation and group (``breakdown`` overall, question_type
  or category), accuracy with its 95% bootstrap interval clustered by image;
* ``summary.csv``: the same over seeds: mean accuracy, an interval clustered by image on
  the per-question mean over seeds, and the spread of the seeds;
* ``comparisons.csv``: McNemar's exact test between modes on the same questions, per seed
  (text_only and image_text against original, text_only against image_text);
* ``runs.csv``: one row per evaluation with its costs: tokens, FLOPs, wall time, energy
  (and how it was obtained), peak memory, provenance.

:func:`publish` copies the tables and the executed pages into the folder the book reads.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from textonly.core.fileio import read_jsonl
from textonly.organism.worlds.text import QUALITIES
from textonly.study.config import Study
from textonly.core.prompts import MODES
from textonly.study.plan import step_id
from textonly.study.steps import recorded, write_if_changed


TABLES = ("results.csv", "summary.csv", "comparisons.csv", "runs.csv")
KEYS = ["dataset", "model", "mode", "quality", "seed", "condition", "scoring"]


GROUP_KEYS = ["dataset", "model", "mode", "quality", "condition", "scoring"]


#: Pairs compared with McNemar's test: (mode A, mode B).
PAIRS = [("image_text", "original"), ("text_only", "original"), ("mixed", "original"),
         ("text_only", "image_text")]


def _cell_row(step) -> dict:
    p = step.parameters
    return {"dataset": p["dataset"], "model": p["model"], "mode": p["mode"], "quality": p["quality"],
            "seed": p["seed"], "condition": p["condition"], "scoring": p["scoring"]}


def groups(metrics: dict) -> list[tuple[str, str, dict]]:
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


def train_flops(run: dict) -> float:
    """A fine-tuning run's training FLOPs, as its ``run.json`` records them: the one exact formula
    (:func:`textonly.core.flops.batch_flops`) over its samples, times the epochs done; NaN for
    a run that recorded none."""
    return float((run.get("flops") or {}).get("total", float("nan")))


def _finished(study, stage: str) -> list:
    return [s for s in study.steps.values() if s.stage == stage and recorded(study, s) is not None]


def tables(study) -> dict[str, pd.DataFrame]:
    """The four tidy tables of a study profile, from its finished evaluations."""
    from textonly.data.layout import load_dataset

    results, runs, correct = [], [], {}
    images: dict[str, dict[str, str]] = {}
    for step in _finished(study, "evaluate"):
        cell = _cell_row(step)
        ev = json.loads((step.dir / "eval.json").read_text())
        for breakdown, group, m in groups(ev["metrics"]):
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
            frames[name] = frames[name].sort_values(KEYS, key=order, ignore_index=True)
    return frames


def order(column: pd.Series) -> pd.Series:
    """Sort key: modes and qualities in the study's order, everything else as it is."""
    if column.name == "mode":
        return column.map({m: i for i, m in enumerate(MODES)})
    if column.name == "quality":
        return column.map(lambda v: QUALITIES.index(v) if v in QUALITIES else -1 if v is None else 9)
    if column.name == "seed":
        return column.fillna(-1)
    return column


def _run_row(study, step, cell: dict, ev: dict) -> dict:
    params = model_parameters(study.model_path(cell["model"]))
    row = {**cell, "eval_dir": str(step.dir.relative_to(study.dir)), "train_dir": None,
           "eval_seconds": ev["energy"]["seconds"], "eval_energy_kwh": ev["energy"].get("energy_kwh"),
           "eval_energy_mode": ev["energy"].get("energy_mode"), "eval_questions": ev["questions"],
           "parse_failure_rate": ev.get("parse_failure_rate"),
           "parameters": params.get("total"), "device": _device(ev["provenance"]["device"]),
           "git_commit": ev["provenance"].get("git_commit"),
           "textonly": ev["provenance"]["packages"].get("textonly")}
    if cell["mode"] != "original":
        train_step = study.steps[step_id("train", **{k: cell[k] for k in ("dataset", "model", "mode", "seed",
                                                                           "quality")})]
        run = json.loads((train_step.dir / "run.json").read_text())
        tokens = run["tokens"]
        row.update({
            "train_dir": str(train_step.dir.relative_to(study.dir)), "train_steps": run["steps"],
            "train_epochs": run["epochs"], "train_samples": run["samples"],
            "answer_format": run.get("config", {}).get("answer_format"),
            "train_text_tokens": tokens["text"], "train_image_tokens": tokens["image"],
            "train_flops": train_flops(run),
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
    from textonly.core.stats import clustered_bootstrap_ci

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
    return frame.sort_values(GROUP_KEYS, key=order, ignore_index=True, kind="stable") if len(frame) else frame


def _comparisons(correct: dict) -> pd.DataFrame:
    """McNemar's exact test for each pair of :data:`PAIRS` on the same seed (original has none)."""
    from textonly.core.stats import mcnemar

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
                             "a": cell_a["mode"], "a_quality": cell_a["quality"], "b": cell_b["mode"],
                             "b_quality": cell_b["quality"], "group": group, "a_accuracy": np.mean(list(a.values())),
                             "b_accuracy": np.mean(list(b.values())), **test})
    rows += _pooled(cells)
    columns = ["dataset", "model", "condition", "scoring", "seed", "a", "a_quality", "b", "b_quality", "group",
               "a_accuracy", "b_accuracy", "n", "a_only", "b_only", "p_value"]
    return pd.DataFrame(rows, columns=columns)


def _pooled(cells: list) -> list[dict]:
    """McNemar's test pooled over seeds: every (seed, question) is one pair; a seedless
    ``original`` is paired with each seed of the other mode. Rows have ``seed`` = ``pooled``."""
    from textonly.core.stats import mcnemar

    def key(cell):
        return tuple(cell[k] for k in ("dataset", "model", "condition", "scoring", "mode", "quality"))

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
                             "a": ka[4], "a_quality": ka[5], "b": kb[4], "b_quality": kb[5], "group": group,
                             "a_accuracy": np.mean(list(a.values())), "b_accuracy": np.mean(list(b.values())),
                             **mcnemar(a, b)})
    return rows


def collect(study: Study) -> dict[str, Path]:
    """Gather every finished evaluation of the profile into the tidy tables (see
    :func:`tables`), written to the study folder only when they change."""
    paths = {name: study.dir / name for name in TABLES}
    for name, frame in tables(study).items():
        write_if_changed(paths[name], frame.to_csv(index=False, float_format="%.6g", lineterminator="\n"))
    return paths


def tables_fingerprint(study: Study) -> str:
    digest = hashlib.sha256()
    for name in TABLES:
        path = study.dir / name
        digest.update(path.read_bytes() if path.is_file() else b"-")
    return digest.hexdigest()[:16]


def publish(study: Study) -> Path:
    """Copy the tables and the executed pages (the worlds, the first base model, the analysis
    pages) into the results folder the book reads; unchanged files are left untouched (the
    workflow's ``publish`` job then writes ``study.json`` there, what the folder shows)."""
    out = study.results_dir
    pages = out / "pages"
    pages.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        if (study.dir / name).is_file():
            write_if_changed(out / name, (study.dir / name).read_bytes())
    shown = [s for s in study.steps.values() if s.stage in ("worlds", "page")]
    base = next((s for s in study.steps.values() if s.stage == "base"), None)
    if base is not None:
        shown.insert(1, base)
    for step in shown:
        if step.executed.is_file() and recorded(study, step) is not None:
            write_if_changed(pages / step.notebook, step.executed.read_bytes())
    return out
