"""The model organism's page: the base model and its encoder, its competence against the
targets, what it knows, and its pretraining curves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from textonly.core.fileio import read_jsonl
from textonly.report.common import CHANCE, figure_png, pct, with_interval


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
            rows.append({"world": world, "attribute": attr, "zero-shot %": with_interval(zero),
                         "linear probe, pooled %": with_interval(probe),
                         "linear probe, patches %": with_interval(parts["patch_probe"][attr]), "n": zero["n"]})
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
            {"world": world, "measure": f"attributes, lowest ({lowest})", "accuracy %": with_interval(attrs[lowest]),
             "target %": pct(COMPETENCE["attributes_min"], 0),
             "met": attrs[lowest]["accuracy"] >= COMPETENCE["attributes_min"]},
            {"world": world, "measure": "knowledge of pretraining kinds", "accuracy %": with_interval(knowledge),
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
    from textonly.organism.cards import probe_label

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
