"""What the base model knows after pretraining (its ``report.json`` and card), per world and scoring."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from textonly.organism.pretrain_samples import WORLD_NAMES

if TYPE_CHECKING:
    from textonly.organism.pretrain import PretrainConfig


def evaluate_base(model, processor, config: PretrainConfig, appearance_known: list[str], *,
                  scorings: tuple[str, ...] = ("option", "letter"), progress: bool = True) -> dict:
    """What the base model knows, per world and scoring, with 95% intervals clustered by image.

    ``attributes``: accuracy per attribute on ``pretrain_eval`` (held-out generic
    individuals); ``knowledge``: text questions about pretraining kinds, per fact;
    ``original``: Type 1 / Type 2 on the targets' test images before any fine-tuning (the
    study's ``original`` row), and the same split by whether the target's appearance was in
    the pretraining text (``original_appearance_in_text`` / ``original_appearance_not_in_text``).
    Probes of a scoring other than ``option`` carry its name as a suffix (``attributes_letter``).
    """
    from textonly.data.layout import load_dataset
    from textonly.core.stats import accuracy_table
    from textonly.models.scoring import score_letters, score_options

    scorers = {"option": score_options, "letter": score_letters}
    known = set(appearance_known)
    report = {}
    for name in WORLD_NAMES:
        root = Path(config.worlds) / name
        probe = load_dataset(root / "pretrain_eval", check_images=False).records
        test = load_dataset(root / "test", check_images=False).records
        report[name] = {}
        for scoring in scorings:
            suffix = "" if scoring == "option" else f"_{scoring}"
            preds = scorers[scoring](model, processor, probe, root / "pretrain_eval", progress=progress)
            test_preds = scorers[scoring](model, processor, test, root / "test", progress=progress)
            attributes = [r for r in probe if r["question_type"] == 0]
            knowledge = [r for r in probe if r["question_type"] == 2]
            report[name].update({
                f"attributes{suffix}": accuracy_table(attributes, preds, by="category"),
                f"knowledge{suffix}": accuracy_table(knowledge, preds, by="asks"),
                f"original{suffix}": accuracy_table(test, test_preds, by="question_type"),
            })
            if scoring == "option":
                for label, keep in (("in_text", True), ("not_in_text", False)):
                    part = [r for r in test if (r["subject"] in known) == keep]
                    report[name][f"original_appearance_{label}"] = accuracy_table(part, test_preds,
                                                                                  by="question_type")
    return report
