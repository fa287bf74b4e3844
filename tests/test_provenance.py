"""What identifies a build's inputs: the data hash (annotations and image bytes) and the model identity
(the bytes of a local model's files, else the hub id)."""

import os
import shutil

import pytest
import torch
from safetensors.torch import save_file

from conftest import good_record, make_dataset, write_image
from textonly.core.provenance import data_hash, model_identity


def _model(folder, seed: int):
    """A model folder: a config and one weight file whose size does not depend on ``seed``."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llava_next"}')
    save_file({"w": torch.randn(4, 4, generator=torch.Generator().manual_seed(seed))}, folder / "model.safetensors")
    return folder


def test_data_hash_covers_the_image_bytes(tmp_path):
    root = make_dataset(tmp_path / "ds", [good_record(0), good_record(1)])
    before = data_hash(root)
    write_image(root / "images" / "1.png", colour=(0, 0, 255))  # same name, same size, other pixels
    changed = data_hash(root)
    assert changed != before
    (root / "images" / "spare.png").write_bytes((root / "images" / "0.png").read_bytes())
    assert data_hash(root) != changed
    shutil.copytree(root, tmp_path / "copy")
    assert data_hash(tmp_path / "copy") == data_hash(root)  # the content, not the place


def test_same_architecture_other_weights_other_identity(tmp_path):
    a, b = _model(tmp_path / "a", seed=0), _model(tmp_path / "b", seed=1)
    assert (a / "model.safetensors").stat().st_size == (b / "model.safetensors").stat().st_size
    assert model_identity(a) != model_identity(b)
    shutil.copytree(a, tmp_path / "moved")
    assert model_identity(tmp_path / "moved") == model_identity(a)
    (a / "README.md").write_text("# a card does not change the weights")
    assert model_identity(a) == model_identity(tmp_path / "moved")


def test_weights_are_hashed_once_until_they_change(tmp_path, monkeypatch):
    folder = _model(tmp_path / "m", seed=0)
    first = model_identity(folder)
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda file, *a, **k: opened.append(file) or real_open(file, *a, **k))
    assert model_identity(folder) == first and opened == []
    save_file({"w": torch.ones(4, 4)}, folder / "model.safetensors")  # same size; a new modification time
    stat = (folder / "model.safetensors").stat()
    os.utime(folder / "model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert model_identity(folder) != first
    assert [os.path.basename(f) for f in opened] == ["model.safetensors"]


@pytest.mark.parametrize("name, revision, identity", [
    ("llava-hf/llava-v1.6-mistral-7b-hf", None, "llava-hf/llava-v1.6-mistral-7b-hf"),
    ("Qwen/Qwen2-VL-7B-Instruct", "a1b2c3", "Qwen/Qwen2-VL-7B-Instruct@a1b2c3"),
])
def test_a_hub_id_is_its_identity(name, revision, identity):
    assert model_identity(name, revision) == identity


def test_the_captioner_records_the_model_identity(tmp_path):
    from textonly.pipeline.describers import Captioner

    folder = _model(tmp_path / "m", seed=0)
    captioner = Captioner(str(folder), max_new_tokens=8, batch_size=2)
    assert captioner.settings["model_identity"] == model_identity(folder)
