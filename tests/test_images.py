"""The one image loader: confined to its folder, guarded against decompression bombs, RGB out;
and every reader of the package goes through it."""

import os
import re
import warnings
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from conftest import good_record, make_dataset, write_image
from textonly.core.errors import DatasetError
from textonly.data import images
from textonly.data.images import load_image

PACKAGE = Path(images.__file__).resolve().parents[1]


def test_loads_rgb_and_keeps_the_format(tmp_path):
    Image.new("P", (6, 4), 3).save(tmp_path / "palette.png")
    (tmp_path / "sub").mkdir()
    Image.new("L", (5, 5), 128).save(tmp_path / "sub" / "grey.jpg")
    palette, grey = load_image(tmp_path, "palette.png"), load_image(tmp_path, "sub/grey.jpg")
    assert (palette.mode, palette.size, palette.format) == ("RGB", (6, 4), "PNG")
    assert (grey.mode, grey.size, grey.format) == ("RGB", (5, 5), "JPEG")


@pytest.mark.parametrize("image_path, message", [
    ("../outside.png", "escapes the folder"),
    ("a/../../outside.png", "escapes the folder"),
    ("/etc/hostname", "is absolute"),
])
def test_a_path_leaving_the_folder_is_refused(tmp_path, image_path, message):
    write_image(tmp_path / "outside.png")
    (tmp_path / "images" / "a").mkdir(parents=True)
    with pytest.raises(DatasetError, match=message):
        load_image(tmp_path / "images", image_path)


def test_a_symlink_leaving_the_folder_is_refused(tmp_path):
    outside = write_image(tmp_path / "outside.png")
    (tmp_path / "images").mkdir()
    os.symlink(outside, tmp_path / "images" / "link.png")
    with pytest.raises(DatasetError, match="'link.png' escapes the folder"):
        load_image(tmp_path / "images", "link.png")


def test_an_image_over_the_pixel_cap_is_refused_before_decoding(tmp_path, monkeypatch):
    write_image(tmp_path / "big.png", size=(64, 64))
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 1000)
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self))
    with pytest.raises(DatasetError, match=r"^where: image big.png is 64x64 pixels, over the safe limit of 1,000"):
        load_image(tmp_path, "big.png", "where")
    assert decoded == []


def test_pillows_own_bomb_limit_refuses_too(tmp_path, monkeypatch):
    write_image(tmp_path / "big.png", size=(64, 64))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 64x64: over it (a warning), under twice it (an error)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the guard must refuse even where warnings are ignored
        with pytest.raises(DatasetError, match="too large to decode safely"):
            load_image(tmp_path, "big.png")


def test_a_truncated_or_missing_image_is_one_clear_error(tmp_path):
    write_image(tmp_path / "whole.png", size=(64, 64), colour=(1, 2, 3))
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="image cut.png cannot be read as an image"):
        load_image(tmp_path, "cut.png")
    with pytest.raises(DatasetError, match="image gone.png is missing"):
        load_image(tmp_path, "gone.png")


@pytest.fixture
def escaping(tmp_path):
    """A dataset whose one image is a symlink to a file outside it."""
    outside = write_image(tmp_path / "outside.png")
    root = make_dataset(tmp_path / "ds", [good_record(0, image_path="link.png", subject="x")], images=False)
    os.symlink(outside, root / "images" / "link.png")
    return root, good_record(0, image_path="link.png", subject="x")


def test_evaluation_and_training_read_images_through_the_loader(escaping):
    from textonly.models.scoring import _load_image
    from textonly.pipeline.train import Collator

    root, record = escaping
    with pytest.raises(DatasetError, match="escapes the folder"):
        _load_image(root, record)
    with pytest.raises(DatasetError, match="escapes the folder"):
        Collator(None, root, "")._image(record)


def test_pretraining_and_the_world_grid_read_images_through_the_loader(tmp_path, monkeypatch):
    from textonly.organism.pretrain import _pixel_values
    from textonly.organism.worlds.build import _sample_grid

    record = good_record(0, subject="x")
    make_dataset(tmp_path / "test", [record])
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 10)  # the 8x8 test image is over it
    with pytest.raises(DatasetError, match="over the safe limit"):
        _pixel_values(None, {"k": tmp_path / "test" / "images" / "0.png"}, ["k"], progress=False)
    with pytest.raises(DatasetError, match="over the safe limit"):
        _sample_grid(tmp_path, [record])


def test_no_reader_opens_images_by_itself():
    openers = [str(path.relative_to(PACKAGE)) for path in sorted(PACKAGE.rglob("*.py"))
               if path != PACKAGE / "data" / "images.py"
               and re.search(r"Image\.open\(", path.read_text(encoding="utf-8"))]
    assert openers == []
