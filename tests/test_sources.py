"""Real-data sources: class-per-folder images, the hub converter, and failing fast without a hub."""

import time
from collections import Counter

import pytest

from conftest import write_image
from textonly.data import load_dataset
from textonly.errors import DatasetError, HubUnreachableError
from textonly.sources import from_folder, from_hub, hf_to_layout


def _folder(root, classes=6, per_class=4):
    for c in range(classes):
        for i in range(per_class):
            write_image(root / f"CLASS {c}" / f"{i}.jpg", colour=(40 * c, 10 * i, 100))
    return root


def test_from_folder_makes_type1_questions(tmp_path):
    out = from_folder(_folder(tmp_path / "src"), tmp_path / "out", seed=3)
    dataset = load_dataset(out)
    assert len(dataset) == 24
    for r in dataset.records:
        assert r["question_type"] == 1 and len(r["options"]) == 4
        assert r["options"][r["answer"]] == r["subject"] == r["category"]
        assert len(set(r["options"])) == 4
    counts = Counter(r["answer"] for r in dataset.records)
    assert max(counts.values()) - min(counts.values()) <= 1
    again = from_folder(tmp_path / "src", tmp_path / "again", seed=3)
    assert (again / "annotations.jsonl").read_bytes() == (out / "annotations.jsonl").read_bytes()


def test_from_folder_needs_enough_classes_and_readable_images(tmp_path):
    with pytest.raises(DatasetError, match="at least 4"):
        from_folder(_folder(tmp_path / "few", classes=3), tmp_path / "out")
    src = _folder(tmp_path / "bad")
    (src / "CLASS 0" / "0.jpg").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="cannot be read as an image"):
        from_folder(src, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


def test_hf_dataset_converts_to_the_layout(tmp_path):
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    red, blue = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    data = datasets.Dataset.from_dict({
        "question": ["What is it?", "Where is it from?", "What is it?"],
        "options": [["a", "b", "c", "d"]] * 3,
        "answer": [1, "C", "d"],
        "category": ["Food", "Food", "Tool"],
        "id_": ["Food.1.0", "Food.1.1", "Tool.1.0"],
        "question_type": [1, 2, 1],
        "image": [red, red, blue],
    }, features=datasets.Features({
        "question": datasets.Value("string"), "options": datasets.Sequence(datasets.Value("string")),
        "answer": datasets.Value("string"), "category": datasets.Value("string"),
        "id_": datasets.Value("string"), "question_type": datasets.Value("int32"), "image": datasets.Image(),
    }))
    dataset = load_dataset(hf_to_layout(data, tmp_path / "out", source="test/hub"))
    assert [r["answer"] for r in dataset.records] == [1, 2, 3]
    assert dataset.records[0]["image_path"] == dataset.records[1]["image_path"]  # one image, stored once
    assert len(list((tmp_path / "out" / "images").iterdir())) == 2


def test_hub_unreachable_fails_fast_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a closed local port: no traffic leaves
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.perf_counter()
    with pytest.raises(HubUnreachableError, match="cannot reach the Hugging Face hub"):
        from_hub("ddehun/k-viscuit", tmp_path / "kv", timeout=5)
    assert time.perf_counter() - start < 10
    assert not (tmp_path / "kv").exists()
