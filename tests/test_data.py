"""Each kind of bad input gives one clear DatasetError naming the problem; good input loads."""

import os

import pytest

from conftest import good_record, make_dataset, write_image
from textonly.data import images, layout
from textonly.data.layout import load_dataset, write_dataset
from textonly.core.errors import DatasetError


def test_valid_dataset_loads_with_counts(tmp_path):
    root = make_dataset(tmp_path / "ds", [good_record(i) for i in range(6)])
    dataset = load_dataset(root)
    assert len(dataset) == 6
    assert dataset.counts()["question_type"] == {1: 6}
    assert "6 usable" in layout.format_report(dataset)


def test_malformed_json_names_file_and_line(tmp_path):
    root = make_dataset(tmp_path / "ds", [good_record(0), '{"question": "broken",'])
    with pytest.raises(DatasetError, match=r"annotations\.jsonl, line 2: malformed JSON"):
        load_dataset(root)


def test_non_utf8_text_names_line(tmp_path):
    root = make_dataset(tmp_path / "ds", [good_record(0), b'{"question": "caf\xe9"}'])
    with pytest.raises(DatasetError, match=r"line 2: not valid UTF-8"):
        load_dataset(root)


@pytest.mark.parametrize("changes, message", [
    ({"answer": 4}, "answer index 4 out of range"),
    ({"answer": -1}, "answer index -1 out of range"),
    ({"answer": "B"}, "'answer' must be an integer"),
    ({"options": ["a", "b", "c"]}, "3 options, expected 4"),
    ({"options": ["a", "b", "c", "d", "e"]}, "5 options, expected 4"),
    ({"options": ["a", "a", "c", "d"]}, "repeated option"),
    ({"question_type": 3}, "'question_type' must be one of"),
    ({"question": ""}, "'question' must be a non-empty string"),
])
def test_bad_fields(tmp_path, changes, message):
    root = make_dataset(tmp_path / "ds", [good_record(0), good_record(1, **changes)])
    with pytest.raises(DatasetError, match=rf"line 2: .*{message}"):
        load_dataset(root)


def test_missing_field(tmp_path):
    record = good_record(0)
    del record["category"]
    root = make_dataset(tmp_path / "ds", [record])
    with pytest.raises(DatasetError, match="missing field"):
        load_dataset(root)


def test_identical_duplicate_is_an_error(tmp_path):
    root = make_dataset(tmp_path / "ds", [good_record(0), good_record(0)])
    with pytest.raises(DatasetError, match=r"line 2: duplicate id_ 'q0' \(first on line 1\)"):
        load_dataset(root)


def test_reused_id_on_a_different_question_is_renamed_or_strict_error(tmp_path):
    root = make_dataset(tmp_path / "ds", [good_record(0), good_record(1, id_="q0")])
    dataset = load_dataset(root)
    assert [r["id_"] for r in dataset.records] == ["q0", "q0#2"]
    assert dataset.renamed == [{"id_": "q0", "new_id": "q0#2", "line": 2}]
    with pytest.raises(DatasetError, match="duplicate id_"):
        load_dataset(root, strict_ids=True)


def test_missing_image_is_dropped_and_reported(tmp_path):
    root = make_dataset(tmp_path / "ds", [good_record(0), good_record(1)])
    (root / "images" / "1.png").unlink()
    dataset = load_dataset(root)
    assert [r["id_"] for r in dataset.records] == ["q0"]
    assert dataset.dropped == [{"id_": "q1", "image_path": "1.png", "reason": "image missing"}]
    assert "dropped 1 question(s) whose image is missing" in layout.format_report(dataset)
    with pytest.raises(DatasetError, match="image '1.png' is missing"):
        load_dataset(root, drop_missing_images=False)


def test_unreadable_image(tmp_path):
    root = make_dataset(tmp_path / "ds", [good_record(0)])
    (root / "images" / "0.png").write_bytes(b"not an image at all")
    with pytest.raises(DatasetError, match="cannot be read as an image"):
        load_dataset(root)


def test_image_too_large_is_refused_before_decoding(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "ds", [good_record(0)])
    write_image(root / "images" / "0.png", size=(64, 64))
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DatasetError, match="64x64 pixels, over the safe limit"):
        load_dataset(root)


@pytest.mark.parametrize("image_path", ["../escape.png", "sub/../../escape.png", "/etc/passwd"])
def test_image_path_escaping_the_folder_is_refused(tmp_path, image_path):
    write_image(tmp_path / "escape.png")
    root = make_dataset(tmp_path / "ds", [good_record(0, image_path=image_path)])
    with pytest.raises(DatasetError, match=r"line 1: image_path .* (escapes the folder .*images|is absolute)"):
        load_dataset(root)


def test_symlink_escaping_the_folder_is_refused(tmp_path):
    outside = write_image(tmp_path / "outside.png")
    root = make_dataset(tmp_path / "ds", [good_record(0, image_path="link.png")], images=False)
    os.symlink(outside, root / "images" / "link.png")
    with pytest.raises(DatasetError, match="'link.png' escapes the folder"):
        load_dataset(root)


def test_text_only_question_needs_no_image(tmp_path):
    root = make_dataset(tmp_path / "ds", [good_record(0, image_path=None)])
    assert load_dataset(root).records[0]["image_path"] is None


def test_not_a_folder_and_no_annotations(tmp_path):
    with pytest.raises(DatasetError, match="no such directory"):
        load_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="annotations.jsonl"):
        load_dataset(tmp_path / "empty")


def test_write_dataset_is_atomic(tmp_path):
    class Boom(dict):
        def items(self):
            yield "a.png", b"x"
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_dataset(tmp_path / "out", [good_record(0)], images=Boom())
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor a partial folder is left
    write_dataset(tmp_path / "out", [good_record(0)], images={"0.png": b"png bytes"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (tmp_path / "out" / "images" / "0.png").read_bytes() == b"png bytes"
