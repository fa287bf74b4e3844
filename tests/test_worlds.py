"""The synthetic worlds: sizes, look-alike structure, balance, held-out targets, determinism, atomicity."""

import hashlib
import itertools
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from textonly.data.layout import load_dataset
from textonly.core.fileio import read_jsonl
from textonly.organism.worlds import build as build_module
from textonly.organism.worlds import text
from textonly.organism.worlds.build import SIZES, build_world
from textonly.organism.worlds.vocab import WORLDS


def _records(worlds: Path, world: str, split: str) -> list[dict]:
    return load_dataset(worlds / world / split).records


def _species(worlds: Path, world: str) -> list[dict]:
    return json.loads((worlds / world / "world.json").read_text())["species"]


@pytest.mark.parametrize("world, n_train, type1, type2, categories", [
    ("wings", 100, 200, 200, 4),
    ("heritage", 237, 237, 420, 10),
])
def test_study_splits_mirror_the_paper(worlds, world, n_train, type1, type2, categories):
    train, test = _records(worlds, world, "train"), _records(worlds, world, "test")
    assert len(train) == n_train and len({r["image_path"] for r in train}) == n_train
    counts = Counter(r["question_type"] for r in test)
    assert counts == {1: type1, 2: type2}
    assert len({r["category"] for r in test}) == categories
    targets = {s["name"] for s in _species(worlds, world) if s["role"] == "target"}
    assert {r["subject"] for r in train} == targets  # one training image per target
    assert not {r["image_path"] for r in train} & {r["image_path"] for r in test}  # new images
    val = _records(worlds, world, "val")  # one more new image per target, for choosing recipes
    assert Counter(r["question_type"] for r in val) == {1: len(targets), 2: len(targets)}
    assert {r["subject"] for r in val} == targets
    assert len({r["image_path"] for r in val}) == len(targets)


@pytest.mark.parametrize("world", ["wings", "heritage"])
def test_answer_positions_balanced_and_options_valid(worlds, world):
    for split in ("train", "val", "test", "pretrain", "pretrain_eval"):
        records = _records(worlds, world, split)
        assert all(len(r["options"]) == 4 and len(set(r["options"])) == 4 for r in records)
        counts = Counter(r["answer"] for r in records)
        assert max(counts.values()) - min(counts.values()) <= (1 if split in ("train", "test") else 2), (split, counts)


def test_wings_has_enough_species_for_label_set_sizes_up_to_100(worlds):
    species = _species(worlds, "wings")
    assert len(species) >= 120
    assert sum(s["role"] == "target" for s in species) == 100


@pytest.mark.parametrize("world", ["wings", "heritage"])
def test_look_alike_groups_differ_in_one_or_two_attributes_and_facts(worlds, world):
    groups: dict[int, list[dict]] = {}
    for s in _species(worlds, world):
        groups.setdefault(s["group"], []).append(s)
    for members in groups.values():
        assert len({m["category"] for m in members}) == 1
        for a, b in itertools.combinations(members, 2):
            differ = sum(a["attributes"][k] != b["attributes"][k] for k in a["attributes"])
            assert 1 <= differ <= 2
        for fact in WORLDS[world].facts:
            values = [m["facts"][fact.name] for m in members]
            if len(fact.values) >= len(members):
                assert len(set(values)) == len(values)  # Type 2 needs the right member


@pytest.mark.parametrize("world", ["wings", "heritage"])
def test_distractors_mostly_from_the_look_alike_group(worlds, world):
    species = _species(worlds, world)
    group_of = {s["name"]: s["group"] for s in species}
    category_of = {s["name"]: s["category"] for s in species}
    for r in _records(worlds, world, "test"):
        if r["question_type"] != 1:
            continue
        answer = r["options"][r["answer"]]
        distractors = [o for i, o in enumerate(r["options"]) if i != r["answer"]]
        assert sum(group_of[o] == group_of[answer] for o in distractors) == 2
        assert all(category_of[o] == category_of[answer] for o in distractors)


@pytest.mark.parametrize("world", ["wings", "heritage"])
def test_target_images_kept_out_of_pretraining(worlds, world):
    species = _species(worlds, world)
    targets = {s["name"] for s in species if s["role"] == "target"}
    target_looks = {tuple(sorted(s["attributes"].items())) for s in species if s["role"] == "target"}
    captions = read_jsonl(worlds / world / "pretrain" / "captions.jsonl")
    assert len(captions) == SIZES[world].generic_images + SIZES[world].images_per_pretrain_species * (
        len(species) - len(targets))
    for c in captions:
        assert c["subject"] not in targets
        assert tuple(sorted(c["attributes"].items())) not in target_looks
    pretrain = _records(worlds, world, "pretrain")
    assert not {r.get("subject") for r in pretrain} & targets
    assert {r["question_type"] for r in pretrain} == {0, 1, 2}
    knowledge = [r for r in pretrain if r["id_"].startswith("know.")]
    assert knowledge and all(r["image_path"] is None for r in knowledge)
    task = [r for r in pretrain if r["question_type"] in (1, 2) and r["image_path"]]
    assert len(task) == SIZES[world].images_per_pretrain_species * (len(species) - len(targets))
    lines = read_jsonl(worlds / world / "pretrain" / "text.jsonl")
    assert {line["role"] for line in lines} == {"target", "pretrain"}  # tagged for the base model to choose


def test_held_out_evaluation_asks_every_attribute(worlds):
    records = _records(worlds, "wings", "pretrain_eval")
    attrs = Counter(r["category"] for r in records if r["question_type"] == 0)
    assert set(attrs) == {a.name for a in WORLDS["wings"].attributes}
    assert len(set(attrs.values())) == 1


def test_descriptions_at_four_qualities():
    world = WORLDS["wings"]
    subject = {"name": "Test Species", "attributes": {a.name: a.values[0] for a in world.attributes},
               "facts": {f.name: f.values[0] for f in world.facts}}
    for seed in range(20):
        d = text.descriptions(world, subject, np.random.default_rng(seed))
        assert set(d) == {text.oracle_description(q) for q in text.QUALITIES}
        assert "Test Species" in d["oracle-name_only"] and "Test Species" not in d["oracle-full"]
        values_full = sum(a.values[0] in d["oracle-full"] for a in world.attributes)
        assert values_full == len(world.attributes)
        assert sum(a.values[0] in d["oracle-wrong"] for a in world.attributes) == len(world.attributes) - 1
        assert world.facts[0].values[0] in d["oracle-full"] and world.facts[0].values[0] not in d["oracle-partial"]


def test_phrasing_varies(worlds):
    questions = {r["question"] for r in _records(worlds, "wings", "test") if r["question_type"] == 1}
    fulls = [r["descriptions"]["oracle-full"] for r in _records(worlds, "wings", "train")]
    assert len(questions) >= 3
    assert len({f.split(".")[0] for f in fulls}) >= 5  # opening sentences differ


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
@pytest.mark.parametrize("world", ["wings", "heritage"])
def test_same_seed_gives_byte_identical_files(worlds, tmp_path, world):
    again = build_world(world, tmp_path, seed=0, workers=1, progress=False)  # other worker count, too
    assert _hashes(again) == _hashes(worlds / world)


def test_other_seed_differs_and_rebuild_is_skipped(tmp_path, monkeypatch):
    a = build_world("wings", tmp_path / "a", seed=1, image_size=16, progress=False)
    b = build_world("wings", tmp_path / "b", seed=2, image_size=16, progress=False)
    assert (a / "train" / "annotations.jsonl").read_bytes() != (b / "train" / "annotations.jsonl").read_bytes()
    monkeypatch.setattr(build_module, "make_species", lambda *a, **k: pytest.fail("rebuilt"))
    assert build_world("wings", tmp_path / "a", seed=1, image_size=16, progress=False) == a


def test_interrupted_build_leaves_nothing_that_looks_finished(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = build_module.render

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 50:
            raise KeyboardInterrupt  # as if killed mid-build
        return real(*args, **kwargs)

    monkeypatch.setattr(build_module, "render", dying)
    with pytest.raises(KeyboardInterrupt):
        build_world("wings", tmp_path, image_size=16, workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_world_cards_show_counts_and_samples(worlds):
    card = (worlds / "heritage" / "README.md").read_text()
    assert "![samples](samples.png)" in (worlds / "wings" / "README.md").read_text()
    assert (worlds / "wings" / "samples.png").stat().st_size > 1000
    assert "| 2 | 420 |" in card and "| 1 | 237 |" in card
    for quality in text.QUALITIES:
        assert f"**{quality}**" in card
