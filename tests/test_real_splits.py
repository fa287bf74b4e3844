"""The splits of the real datasets beside the project, and the real study's smoke profile run end to
end on them (skipped with a reason where the data root lacks them)."""

import hashlib
import json

import pandas as pd
import pytest

from conftest import shared_dataset
from textonly.core.config import PROJECT_ROOT
from textonly.data.layout import load_dataset
from textonly.data.splits import MARKER, make_split

pytestmark = pytest.mark.shared_data


def _hashes(dataset) -> set[str]:
    return {hashlib.sha256(dataset.image_file(r).read_bytes()).hexdigest() for r in dataset.records}


def test_k_viscuit_split_by_image(tmp_path):
    source = shared_dataset("k-viscuit")
    out = make_split("by-image", source, tmp_path / "kv", seed=0, train_types=[1])
    train, test = load_dataset(out / "train"), load_dataset(out / "test")
    everything = load_dataset(source)  # 646 usable questions on the images that are there
    train_images = {r["image_path"] for r in train.records}
    test_images = {r["image_path"] for r in test.records}
    assert not train_images & test_images and not _hashes(train) & _hashes(test)
    assert train_images | test_images == {r["image_path"] for r in everything.records}
    assert abs(len(train_images) - len(test_images)) <= 1  # half the images each
    # the training side: the one Type 1 question of each of its images; the test side: every question
    assert len(train) == len(train_images) and {r["question_type"] for r in train.records} == {1}
    assert len(test) == sum(r["image_path"] in test_images for r in everything.records)
    again = make_split("by-image", source, tmp_path / "again", seed=0, train_types=[1])
    assert (again / "test" / "annotations.jsonl").read_bytes() == (out / "test" / "annotations.jsonl").read_bytes()


def test_butterflies_split_one_training_image_per_species(tmp_path):
    source = shared_dataset("butterflies-100")
    out = make_split("classes", source, tmp_path / "bf", seed=0)
    train, test = load_dataset(out / "train"), load_dataset(out / "test")
    assert len(train) == 100 and len({r["subject"] for r in train.records}) == 100  # the paper's 100
    # valid/ lacks two species: each borrows one test/ image, which leaves the test side
    assert len(test) == 500 - 2 and not _hashes(train) & _hashes(test)
    made = json.loads((out / MARKER).read_text())
    assert sorted(n.split("/")[0] for n in made["images"]["train"] if n not in
                  {f"{p.parent.name}/{p.name}" for p in (source / "valid").glob("*/*.jpg")}) == \
        ["GREAT EGGFLY", "SOUTHERN DOGFACE"]


@pytest.mark.slow
def test_the_real_study_smoke_profile_runs_end_to_end(tmp_path):
    """Tiny LLaVA-NeXT and Qwen2-VL models (random weights, real processors) on a handful of the real
    images: split, describe (captioner), train, evaluate, tables and pages; a second run runs nothing."""
    from textonly.study.config import load_study
    from textonly.study.engine import run_study

    shared_dataset("k-viscuit"), shared_dataset("butterflies-100")
    config = PROJECT_ROOT / "studies" / "real.yaml"
    report = run_study(config, "smoke", root=tmp_path)
    assert report.ok, report.failed or report.blocked
    study = load_study(config, "smoke", root=tmp_path)
    assert sorted(report.executed) == sorted(study.steps)
    assert {s.stage for s in study.steps.values()} == {"split", "convert", "train", "evaluate", "page"}
    overall = pd.read_csv(study.dir / "results.csv").query("breakdown == 'overall'")
    assert sorted(zip(overall["dataset"], overall["model"], overall["mode"])) == \
        sorted((c.dataset, c.model, c.mode) for c in study.cells)
    for dataset in ("k-viscuit-few", "butterfly-few"):
        train, test = (load_dataset(study.split(dataset, side)) for side in ("train", "test"))
        assert len(train) >= 3 and len(test) >= 3 and not _hashes(train) & _hashes(test)
        twin = load_dataset(study.steps[f"convert/{dataset}"].dir / "data")
        describer = study.datasets[dataset]["describer_model"]
        label = f"captioner-{study.model_path(describer).rsplit('/', 1)[-1]}"
        assert all(label in r["descriptions"] for r in twin.records)
    again = run_study(config, "smoke", root=tmp_path)
    assert again.ok and again.executed == []
