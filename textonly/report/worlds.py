"""The worlds' page: splits and counts, example descriptions, and a grid of look-alike kinds."""

from __future__ import annotations

import json

import pandas as pd

from textonly.core.fileio import read_jsonl
from textonly.data.images import load_image
from textonly.data.layout import IMAGES
from textonly.organism.worlds.text import QUALITIES, oracle_description


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
    """The first ``k`` training samples' descriptions at each quality."""
    records = read_jsonl(study.world_dir(world) / "train" / "annotations.jsonl")[:k]
    rows = []
    for r in records:
        for quality in QUALITIES:
            rows.append({"subject": r.get("subject"), "quality": quality, "description": r["descriptions"].get(oracle_description(quality))})
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
                image = load_image(root / "test" / IMAGES, path)
                grid.paste(image.resize((tile, tile), Image.NEAREST), (col * tile, row * (tile + label)))
                draw.text((col * tile + 2, row * (tile + label) + tile), name[:16], fill="black")
                col += 1
    return grid
