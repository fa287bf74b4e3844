"""Real-data sources: class-per-folder images, the hub converter, and failing fast without a hub."""

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import datasets
import pytest
from PIL import Image

from conftest import write_image
from textonly.data import images
from textonly.data.layout import load_dataset
from textonly.core.errors import DatasetError, HubUnreachableError, TextonlyError
from textonly.data.sources import check_hub, from_folder, from_hub, hf_to_layout


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


def _hub_data(pictures: list) -> datasets.Dataset:
    n = len(pictures)
    return datasets.Dataset.from_dict(
        {"question": ["What is it?"] * n, "options": [["a", "b", "c", "d"]] * n, "answer": [0] * n, "image": pictures},
        features=datasets.Features({"question": datasets.Value("string"),
                                    "options": datasets.Sequence(datasets.Value("string")),
                                    "answer": datasets.Value("int32"), "image": datasets.Image()}))


def test_hf_dataset_converts_to_the_layout(tmp_path):
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


def test_hf_image_over_the_pixel_cap_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DatasetError, match=r"test/hub, row 0: image .* is 16x16 pixels, over the safe limit"):
        hf_to_layout(_hub_data([Image.new("RGB", (16, 16), "red")]), tmp_path / "out", source="test/hub")
    assert not (tmp_path / "out").exists()


@pytest.fixture
def hub(monkeypatch):
    """A local stand-in for the hub that answers 404 to everything; what it was asked, and with which token."""
    asked = []

    class NotFound(BaseHTTPRequestHandler):
        def do_HEAD(self):
            asked.append((self.path, self.headers.get("Authorization")))
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    yield asked
    server.shutdown()


def test_one_hub_rule_for_models_and_datasets(hub):
    from textonly.models.hub import load_model

    for kind, call in (("dataset", lambda: check_hub("org/thing", kind="dataset")),
                       ("model", lambda: check_hub("org/thing", kind="model")),
                       ("model", lambda: load_model("org/thing"))):
        with pytest.raises(TextonlyError, match=f"answered 404 for {kind} 'org/thing': check the name"):
            call()
    assert hub == [("/api/datasets/org/thing", "Bearer hf_test")] + [("/api/models/org/thing", "Bearer hf_test")] * 2


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_a_switched_off_hub_is_not_asked(hub, monkeypatch, variable):
    monkeypatch.setenv(variable, "true")
    check_hub("org/thing", kind="dataset")
    check_hub("org/thing", kind="model")
    assert hub == []
