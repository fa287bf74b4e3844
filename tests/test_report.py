"""The book's tables pick the main comparison from what a study actually ran."""

import pandas as pd

from textonly.report.common import main_scoring
from textonly.report.descriptions import quality_frame

COLUMNS = ["dataset", "model", "mode", "quality", "condition", "scoring", "breakdown", "group", "seeds",
           "accuracy", "low", "high", "n"]


def _summary(scorings):
    return pd.DataFrame([["w", "m", "original", None, "image", s, "overall", "overall", 1, 0.5, 0.4, 0.6, 10]
                         for s in scorings], columns=COLUMNS)


def test_the_main_scoring_is_option_where_run_else_the_first_run():
    assert main_scoring(_summary(["letter", "option", "generate"])) == "option"
    # a hub study scored only by letter and generate (studies/real.yaml, full) still has main tables
    assert main_scoring(_summary(["generate", "letter"])) == "letter"


def test_no_ablation_is_an_empty_table_with_its_columns():
    frame = quality_frame(None, {"summary": _summary(["letter"])})
    assert frame.empty and {"accuracy", "setting"} <= set(frame.columns)
