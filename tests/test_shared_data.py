"""The real datasets beside the project (skipped with a reason where they are absent)."""

import pytest

from textonly.data.layout import format_report, load_dataset
from textonly.data.sources import from_folder
from conftest import shared_dataset

MISSING_IMAGES = {"0.jpg", "15.jpg", "25.jpg", "3.png", "83.jpg"}


def test_k_viscuit_checks_with_missing_images_dropped():
    dataset = load_dataset(shared_dataset("k-viscuit"))
    assert len(dataset.records) + len(dataset.dropped) == 657
    assert len(dataset.dropped) == 11 and len(dataset) == 646
    assert {d["image_path"] for d in dataset.dropped} == MISSING_IMAGES
    assert len({r["id_"] for r in dataset.records}) == 646  # ids usable as keys
    assert len(dataset.counts()["category"]) == 10
    report = format_report(dataset)
    assert "646 usable" in report and "Food.1.0" in report


@pytest.mark.slow
def test_butterflies_from_folder(tmp_path):
    out = from_folder(shared_dataset("butterflies-100") / "test", tmp_path / "bf", seed=0)
    dataset = load_dataset(out)
    assert len(dataset) == 500
    assert len({r["subject"] for r in dataset.records}) == 100
