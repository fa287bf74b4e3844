"""The real datasets' training and test splits (`data split`), on small synthetic stand-ins, and
the study's split steps and tiny models (no shared data needed)."""

import json
import os
from pathlib import Path

import pytest

from conftest import make_dataset, write_image
from textonly.cli.main import main
from textonly.core.errors import DatasetError, TextonlyError
from textonly.data.layout import load_dataset
from textonly.data.splits import MARKER, make_split, split_by_image, split_classes, split_folder
from textonly.study import config as st

# --- a K-VISCUIT stand-in: each image one Type 1 and two Type 2 questions -------------------------

IMAGES = 10


def _kviscuit(root: Path) -> Path:
    records = []
    for i in range(IMAGES):
        for q, qtype in enumerate((1, 2, 2)):
            records.append({"question": f"Question {q} about image {i}?", "options": ["a", "b", "c", "d"],
                            "answer": (i + q) % 4, "category": "Food" if i % 2 else "Heritage",
                            "id_": f"img{i}.q{q}", "question_type": qtype, "image_path": f"{i}.png"})
    records.append({**records[0], "id_": "lost", "image_path": "missing.png"})  # as K-VISCUIT: no such image
    make_dataset(root, records)
    (root / "images" / "missing.png").unlink()
    for i in range(IMAGES):  # distinct bytes per image
        write_image(root / "images" / f"{i}.png", colour=(10 * i, 0, 0))
    return root


def _sides(out: Path) -> dict:
    return {side: load_dataset(out / side).records for side in ("train", "test")}


def _image_of(record: dict) -> str:
    return record["id_"].split(".")[0]


def test_by_image_keeps_every_question_of_an_image_on_one_side(tmp_path):
    out = split_by_image(_kviscuit(tmp_path / "kv"), tmp_path / "split", seed=0)
    sides = _sides(out)
    images = {side: {_image_of(r) for r in records} for side, records in sides.items()}
    assert not images["train"] & images["test"]
    assert len(images["train"]) == len(images["test"]) == IMAGES // 2  # test fraction 0.5
    for side, records in sides.items():  # all three questions of each of the side's images
        assert sorted(_image_of(r) for r in records) == sorted(3 * list(images[side]))
    made = json.loads((out / MARKER).read_text())
    assert made["questions"] == {"train": 15, "test": 15}
    assert made["notes"] == ["1 question(s) dropped: their image is missing"]
    assert "data split by-image" in made["command"] and "--seed 0" in made["command"]
    assert "data split by-image" in (out / "train" / "README.md").read_text()


def test_by_image_is_deterministic_for_a_seed(tmp_path):
    source = _kviscuit(tmp_path / "kv")
    one = split_by_image(source, tmp_path / "one", seed=3)
    two = split_by_image(source, tmp_path / "two", seed=3)
    other = split_by_image(source, tmp_path / "other", seed=4)
    for side in ("train", "test"):
        assert (one / side / "annotations.jsonl").read_bytes() == (two / side / "annotations.jsonl").read_bytes()
    assert json.loads((one / MARKER).read_text())["images"] != json.loads((other / MARKER).read_text())["images"]


def test_by_image_options_train_types_max_images_and_fraction(tmp_path):
    source = _kviscuit(tmp_path / "kv")
    out = split_by_image(source, tmp_path / "s", seed=0, train_types=[1], max_images=4, test_fraction=0.25)
    sides = _sides(out)
    assert {r["question_type"] for r in sides["train"]} == {1}  # the paper: one Type 1 sample per image
    assert {r["question_type"] for r in sides["test"]} == {1, 2}  # the test side keeps every question
    assert len(sides["train"]) == 3 and len(sides["test"]) == 3  # 4 images: 3 train, 1 test
    # the images are linked with the questions, unchanged
    record = sides["test"][0]
    assert (out / "test" / "images" / record["image_path"]).read_bytes() == \
        (source / "images" / record["image_path"]).read_bytes()
    with pytest.raises(TextonlyError, match="test fraction 1.0"):
        split_by_image(source, tmp_path / "bad", test_fraction=1.0)
    with pytest.raises(TextonlyError, match="max images 1"):
        split_by_image(source, tmp_path / "bad", max_images=1)


def test_a_repeat_is_skipped_and_a_changed_source_is_split_again(tmp_path):
    source = _kviscuit(tmp_path / "kv")
    out = split_by_image(source, tmp_path / "s", seed=0)
    before = (out / MARKER).stat().st_mtime_ns
    split_by_image(source, tmp_path / "s", seed=0)
    assert (out / MARKER).stat().st_mtime_ns == before
    write_image(source / "images" / "0.png", colour=(1, 2, 3))  # an image changed
    split_by_image(source, tmp_path / "s", seed=0)
    assert (out / MARKER).stat().st_mtime_ns != before


# --- a butterfly stand-in: class-per-folder valid/ and test/ ---------------------------------------

SPECIES = ["ADONIS", "ATLAS MOTH", "CLEOPATRA", "MONARCH", "Iphiclus sister", "RED ADMIRAL"]


def _butterflies(root: Path) -> Path:
    for k, label in enumerate(SPECIES):
        for n in range(1, 4):
            write_image(root / "test" / label / f"{n}.jpg", colour=(k * 30, n * 40, 0))
            if label != "MONARCH":  # as butterflies-100: valid/ lacks a species
                write_image(root / "valid" / label / f"{n}.jpg", colour=(k * 30, n * 40, 200))
    return root


def test_classes_one_training_image_per_species_from_valid(tmp_path):
    source = _butterflies(tmp_path / "bf")
    out = split_classes(source, tmp_path / "s", seed=0)
    sides = _sides(out)
    assert sorted(r["subject"] for r in sides["train"]) == sorted(SPECIES)  # one per species
    valid = {p.read_bytes() for p in (source / "valid").rglob("*.jpg")}
    from_valid = {side: [r for r in records if (out / side / "images" / r["image_path"]).read_bytes() in valid]
                  for side, records in sides.items()}
    assert len(from_valid["train"]) == len(SPECIES) - 1 and from_valid["test"] == []  # valid/: training only
    # the species without valid/ images borrows one test/ image, which leaves the test side
    made = json.loads((out / MARKER).read_text())
    borrowed = [name for name in made["images"]["train"] if name.startswith("MONARCH/")]
    assert len(borrowed) == 1 and borrowed[0] not in made["images"]["test"]
    assert len(sides["test"]) == 3 * len(SPECIES) - 1
    assert any("MONARCH: no image in valid/" in note for note in made["notes"])
    assert all(r["question_type"] == 1 and r["answer"] == r["options"].index(r["subject"]) for r in sides["test"])


def test_classes_subsets_are_seeded(tmp_path):
    source = _butterflies(tmp_path / "bf")
    one = split_classes(source, tmp_path / "one", seed=1, max_classes=4, test_per_class=1, per_class=2)
    two = split_classes(source, tmp_path / "two", seed=1, max_classes=4, test_per_class=1, per_class=2)
    assert json.loads((one / MARKER).read_text())["images"] == json.loads((two / MARKER).read_text())["images"]
    sides = _sides(one)
    assert len({r["subject"] for r in sides["train"]}) == 4 and len(sides["test"]) <= 4
    assert all(sum(r["subject"] == s for r in sides["train"]) == 2 for s in {r["subject"] for r in sides["train"]})


# --- a user's own split folder ---------------------------------------------------------------------

def test_folder_split_is_checked_and_linked(tmp_path):
    from conftest import good_record

    own = tmp_path / "own"
    make_dataset(own / "train", [good_record(i) for i in range(3)])
    make_dataset(own / "test", [good_record(i) for i in range(3, 6)])
    for side, numbers in (("train", range(3)), ("test", range(3, 6))):
        for i in numbers:
            write_image(own / side / "images" / f"{i}.png", colour=(0, 0, 40 * i))
    out = split_folder(own, tmp_path / "s")
    assert [r["id_"] for r in _sides(out)["test"]] == ["q3", "q4", "q5"]
    assert os.path.samefile(out / "test" / "images" / "3.png", own / "test" / "images" / "3.png") or \
        (out / "test" / "images" / "3.png").read_bytes() == (own / "test" / "images" / "3.png").read_bytes()
    write_image(own / "test" / "images" / "3.png", colour=(0, 0, 40))  # now the same bytes as a training image
    with pytest.raises(DatasetError, match="1 image.s. on both sides, e.g. train/images/1.png = test/images/3.png"):
        split_folder(own, tmp_path / "s2")
    with pytest.raises(DatasetError, match="no train/ folder"):
        split_folder(own / "train", tmp_path / "s3")


def test_make_split_refuses_settings_the_kind_does_not_take(tmp_path):
    with pytest.raises(TextonlyError, match="split 'folder' takes no seed"):
        make_split("folder", tmp_path, tmp_path / "out", seed=1)
    with pytest.raises(TextonlyError, match="split kind 'random'"):
        make_split("random", tmp_path, tmp_path / "out")


def test_cli_data_split(tmp_path, capsys):
    source = _kviscuit(tmp_path / "kv")
    assert main(["data", "split", "by-image", str(source), "--out", str(tmp_path / "s"), "--seed", "2",
                 "--train-types", "1"]) == 0
    printed = capsys.readouterr().out
    assert "s/train: 5 questions, 5 usable" in printed and "s/test: 15 questions, 15 usable" in printed
    assert json.loads((tmp_path / "s" / MARKER).read_text())["settings"]["seed"] == 2
    assert main(["data", "split", "classes", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b")]) == 2
    assert "no such dataset folder" in capsys.readouterr().err


# --- the study: split steps and tiny models --------------------------------------------------------

STUDY = """
name: r
datasets:
  kv: {split: {kind: by-image, source: %s, seed: 0, max_images: 6}, describer: captioner, describer_model: tiny}
  own: {train: own/train, test: own/test, describer: openai}
models:
  tiny: {tiny: qwen2_vl}
  hub: {hub: org/model}
profiles:
  p:
    grids:
      g: {datasets: [kv, own], models: [tiny, hub], modes: [original, image_text, text_only]}
"""


def _study(tmp_path, text=None, source="kv-source"):
    path = tmp_path / "study.yaml"
    tmp_path.mkdir(parents=True, exist_ok=True)
    path.write_text(text or STUDY % source)
    return st.load_study(path, "p", root=tmp_path)


def test_a_split_dataset_is_split_first_by_its_step(tmp_path):
    study = _study(tmp_path)
    assert list(study.steps)[0] == "split/kv" and "split/own" not in study.steps
    for step in study.steps.values():
        if step.parameters.get("dataset") == "kv" and step.stage in ("convert", "train") or \
                step.stage == "evaluate" and step.parameters["mode"] == "original" and step.parameters["dataset"] == "kv":
            assert "split/kv" in step.needs, step.run_id
    assert study.split("kv", "test") == study.dir / "split" / "kv" / "data" / "test"
    (tmp_path / "own" / "train").mkdir(parents=True)
    assert study.split("own", "train") == tmp_path / "own" / "train"  # a folder of the config, as it was
    with pytest.raises(TextonlyError, match="source .*kv-source not found"):
        study.split_args(study.steps["split/kv"])
    _kviscuit(tmp_path / "kv-source")  # relative to the root
    args = study.split_args(study.steps["split/kv"])
    assert args == {"kind": "by-image", "source": str(tmp_path / "kv-source"),
                    "out": str(study.dir / "split" / "kv" / "data"), "seed": 0, "max_images": 6}
    make_split(**args)
    assert len(load_dataset(study.split("kv", "train"))) + len(load_dataset(study.split("kv", "test"))) == 18


def test_a_split_source_is_looked_up_under_the_data_root(tmp_path, monkeypatch):
    _kviscuit(tmp_path / "shared" / "k-viscuit")
    monkeypatch.setenv("TEXTONLY_DATA_ROOT", str(tmp_path / "shared"))
    study = _study(tmp_path / "project", source="k-viscuit")
    assert study.split_args(study.steps["split/kv"])["source"] == str(tmp_path / "shared" / "k-viscuit")


@pytest.mark.parametrize("dataset, model, message", [
    ("{split: {kind: shuffle, source: x}, describer: openai}", "{hub: a/b}", "split kind 'shuffle'"),
    ("{split: {kind: classes, source: x, test_fraction: 0.2}, describer: openai}", "{hub: a/b}",
     "split 'classes' takes no test_fraction"),
    ("{split: {kind: folder}, describer: openai}", "{hub: a/b}", "'split' needs 'kind' and 'source'"),
    ("{split: {kind: folder, source: x}, train: a, test: b, describer: openai}", "{hub: a/b}", "needs one of"),
    ("{split: {kind: folder, source: x}, describer: openai}", "{tiny: llava}", "tiny 'llava': choose from"),
    ("{split: {kind: folder, source: x}, describer: openai}", "{tiny: qwen2_vl, hub: a/b}", "exactly one of"),
])
def test_split_datasets_and_tiny_models_are_checked_on_load(tmp_path, dataset, model, message):
    text = f"name: r\ndatasets: {{d: {dataset}}}\nmodels: {{m: {model}}}\n" \
           "profiles: {p: {grids: {g: {datasets: [d], models: [m], modes: [original]}}}}\n"
    with pytest.raises(TextonlyError, match=message):
        _study(tmp_path, text)


def test_a_tiny_model_is_built_once_and_describes_through_the_study(tmp_path, monkeypatch):
    from textonly.models import hub

    built = []

    def fake_build(arch, out, *, seed=0):
        built.append((arch, seed))
        (Path(out) / "config.json").write_text(json.dumps({"arch": arch}))
        return Path(out)

    monkeypatch.setattr(hub, "build_tiny", fake_build)
    study = _study(tmp_path)
    path = Path(study.model_path("tiny"))
    assert path == tmp_path / "data" / "models" / "tiny-qwen2_vl-seed0" and (path / "config.json").is_file()
    assert study.model_path("tiny") == str(path) and built == [("qwen2_vl", 0)]  # built once
    assert study.model_path("hub") == "org/model"
    # the dataset's describer is a model of the study: the captioner gets its folder
    args = study.convert_args(study.steps["convert/kv"])
    assert args["describer"] == "captioner" and args["model"] == str(path)
    assert study.steps["convert/kv"].settings["describer_spec"] == {"tiny": "qwen2_vl"}
    (path / st.TINY_MARKER).write_text("{}")  # a build of other code: made again
    study.model_path("tiny")
    assert built == [("qwen2_vl", 0)] * 2


def test_the_real_study_profiles():
    smoke = st.load_study("studies/real.yaml", "smoke")
    assert {smoke.models[c.model].get("tiny") for c in smoke.cells} == {"llava_next", "qwen2_vl"}
    assert {s.run_id for s in smoke.steps.values() if s.stage == "split"} == {"split/k-viscuit-few",
                                                                              "split/butterfly-few"}
    assert {smoke.datasets[c.dataset]["describer"] for c in smoke.cells} == {"captioner"}
    assert {c.mode for c in smoke.cells} == {"original", "image_text", "text_only"}
    full = st.load_study("studies/real.yaml", "full")
    assert {s.run_id for s in full.steps.values() if s.stage == "split"} == {"split/k-viscuit", "split/butterfly"}
    assert full.datasets["k-viscuit"]["split"]["kind"] == "by-image"
    assert full.datasets["butterfly"]["split"]["train_from"] == "valid"
