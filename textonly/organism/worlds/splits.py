"""A world's records and the images they need: the study's splits (train, val, test) and the
pretraining material (captions, questions, world text, held-out evaluation); no target is
ever shown in the pretraining material. Images are only registered here (:class:`_Writer`);
:func:`textonly.organism.worlds.build.build_world` renders them.
"""

from __future__ import annotations

import numpy as np

from textonly.data.layout import IMAGES, balanced_positions
from textonly.core.errors import TextonlyError
from textonly.organism.worlds import text
from textonly.organism.worlds.questions import _attribute_question, _knowledge_question, _Questions
from textonly.organism.worlds.species import Sizes, _key, _random_attributes, _rng
from textonly.organism.worlds.vocab import World


class _Writer:
    """Collects render jobs and records for one world, then writes them."""

    def __init__(self, world: World, seed: int, image_size: int):
        self.world, self.seed, self.image_size = world, seed, image_size
        self.jobs: list[tuple[str, str, dict, tuple]] = []  # (relative path, world, attributes, rng keys)

    def image(self, split: str, name: str, attributes: dict) -> str:
        self.jobs.append((f"{split}/{IMAGES}/{name}", self.world.name, attributes, (split, name)))
        return name


def _study_splits(world: World, sizes: Sizes, species: list[dict], seed: int, writer: _Writer):
    targets = [s for s in species if s["role"] == "target"]
    q = _Questions(world, species, _rng(seed, world.name, "questions"))
    rng = q.rng
    type1, type2 = q.type1, q.type2

    # train: one image per target, a Type 1 question
    train = []
    positions = balanced_positions(len(targets), rng)
    for i, subject in enumerate(targets):
        image = writer.image("train", f"train-{i:04d}.png", subject["attributes"])
        desc = text.descriptions(world, subject, _rng(seed, world.name, "train-desc", i))
        train.append(type1(subject, positions[i], f"train.{i:04d}.0", image, desc))

    # test: new images; every image a Type 1 question, Type 2 questions spread over images
    images = [(subject, j) for subject in targets for j in range(sizes.test_images_per_target)]
    n_type2 = sizes.type2_questions
    per_image = [n_type2 // len(images)] * len(images)
    for i in rng.choice(len(images), size=n_type2 % len(images), replace=False):
        per_image[i] += 1
    if max(per_image) > len(world.facts):
        raise TextonlyError(f"{world.name}: more Type 2 questions per image than facts")
    pos1 = balanced_positions(len(images), rng)
    pos2 = iter(balanced_positions(n_type2, rng))
    test = []
    for k, (subject, j) in enumerate(images):
        image = writer.image("test", f"test-{k:04d}.png", subject["attributes"])
        desc = text.descriptions(world, subject, _rng(seed, world.name, "test-desc", k))
        test.append(type1(subject, pos1[k], f"test.{k:04d}.0", image, desc))
        first = (k + j) % len(world.facts)
        for q in range(per_image[k]):
            fact = world.facts[(first + q) % len(world.facts)].name
            test.append(type2(subject, fact, next(pos2), f"test.{k:04d}.{q + 1}", image, desc))

    # val: one more new image per target, a Type 1 and a Type 2 question; recipes are chosen
    # here, never on test (its own generators, so train and test do not depend on it)
    vq = _Questions(world, species, _rng(seed, world.name, "val-questions"))
    vpos1 = balanced_positions(len(targets), vq.rng)
    vpos2 = balanced_positions(len(targets), vq.rng)
    val = []
    for k, subject in enumerate(targets):
        image = writer.image("val", f"val-{k:04d}.png", subject["attributes"])
        desc = text.descriptions(world, subject, _rng(seed, world.name, "val-desc", k))
        val.append(vq.type1(subject, vpos1[k], f"val.{k:04d}.0", image, desc))
        fact = world.facts[k % len(world.facts)].name
        val.append(vq.type2(subject, fact, vpos2[k], f"val.{k:04d}.1", image, desc))
    return train, test, val


def _pretraining(world: World, sizes: Sizes, species: list[dict], seed: int, writer: _Writer):
    """Pretraining material: captions, attribute questions, knowledge questions, world text; no target image."""
    rng = _rng(seed, world.name, "pretrain")
    forbidden = {_key(s["attributes"]) for s in species}  # generic individuals are none of the named ones
    pretrain_species = [s for s in species if s["role"] == "pretrain"]
    individuals = [(None, a) for a in _generic(world, seed, forbidden, sizes.generic_images, "generic")]
    individuals += [(s, s["attributes"]) for s in pretrain_species for _ in range(sizes.images_per_pretrain_species)]
    order = rng.permutation(len(individuals))
    individuals = [individuals[i] for i in order]
    captions, questions = _captions_and_attribute_questions(world, sizes, individuals, seed, writer, rng)
    questions += _task_questions(world, species, individuals, seed, rng)
    questions += _knowledge_questions(world, pretrain_species, 0, rng)
    world_text = _world_text(world, species, seed)
    evaluation = _evaluation(world, sizes, pretrain_species, forbidden, seed, writer, rng)
    return captions, questions, world_text, evaluation


def _generic(world: World, seed: int, forbidden: set, n: int, stream: str) -> list[dict]:
    """``n`` random individuals, none of them a named kind (each stream its own generator)."""
    grng = _rng(seed, world.name, stream)
    out = []
    while len(out) < n:
        attrs = _random_attributes(world, grng)
        if _key(attrs) not in forbidden:
            out.append(attrs)
    return out


def _captions_and_attribute_questions(world: World, sizes: Sizes, individuals: list[tuple], seed: int,
                                      writer: _Writer, rng: np.random.Generator) -> tuple[list[dict], list[dict]]:
    """Each pretraining image: its caption, and questions on a few of its attributes."""
    captions, questions = [], []
    positions = iter(balanced_positions(len(individuals) * sizes.attribute_questions_per_image, rng))
    for i, (subject, attrs) in enumerate(individuals):
        image = writer.image("pretrain", f"pretrain-{i:05d}.png", attrs)
        name = subject["name"] if subject else None
        crng = _rng(seed, world.name, "caption", i)
        captions.append({"id_": f"caption.{i:05d}", "image_path": image, "subject": name,
                         "caption": text.caption(world, attrs, crng, name), "attributes": attrs})
        asked = rng.choice(len(world.attributes), size=sizes.attribute_questions_per_image, replace=False)
        for q, a in enumerate(sorted(asked)):
            questions.append(_attribute_question(world, attrs, world.attributes[a].name, next(positions),
                                                 f"attr.{i:05d}.{q}", image, rng))
    return captions, questions


def _task_questions(world: World, species: list[dict], individuals: list[tuple], seed: int,
                    rng: np.random.Generator) -> list[dict]:
    """The study's own task on pretraining kinds (never targets): which kind is shown, a fact about it."""
    named = [(i, subject) for i, (subject, _) in enumerate(individuals) if subject is not None]
    task = _Questions(world, species, _rng(seed, world.name, "pretrain-task"))
    positions = iter(balanced_positions(len(named), rng))
    questions = []
    for k, (i, subject) in enumerate(named):
        image = f"pretrain-{i:05d}.png"
        if k % 2 == 0:
            questions.append(task.type1(subject, next(positions), f"task.{i:05d}", image, None))
        else:
            fact = world.facts[(k // 2) % len(world.facts)].name
            questions.append(task.type2(subject, fact, next(positions), f"task.{i:05d}", image, None))
    return questions


def _knowledge_questions(world: World, pretrain_species: list[dict], template: int,
                         rng: np.random.Generator) -> list[dict]:
    """Text questions on every fact of every pretraining kind, in the wording ``template``."""
    positions = iter(balanced_positions(len(pretrain_species) * len(world.facts), rng))
    return [_knowledge_question(world, subject, fact, template, next(positions), f"know.{i:04d}.{f}", rng)
            for i, subject in enumerate(pretrain_species) for f, fact in enumerate(world.facts)]


def _world_text(world: World, species: list[dict], seed: int) -> list[dict]:
    """World text about every named species/object, tagged with its role: the base model's
    pretraining decides how much of it about the targets to use."""
    by_group: dict[int, list[dict]] = {}
    for s in species:
        by_group.setdefault(s["group"], []).append(s)
    world_text = []
    for s in species:
        lookalikes = [o for o in by_group[s["group"]] if o is not s][:2]
        for line in text.world_statements(world, s, _rng(seed, world.name, "text", s["name"]), lookalikes):
            world_text.append({"id_": f"text.{len(world_text):05d}", "subject": s["name"], "role": s["role"],
                               **line})
    return world_text


def _evaluation(world: World, sizes: Sizes, pretrain_species: list[dict], forbidden: set, seed: int,
                writer: _Writer, rng: np.random.Generator) -> list[dict]:
    """Held-out evaluation: new generic individuals, every attribute asked; knowledge reworded."""
    evaluation = []
    individuals = _generic(world, seed, forbidden, sizes.eval_generic_images, "eval-generic")
    positions = iter(balanced_positions(len(individuals) * len(world.attributes), rng))
    for i, attrs in enumerate(individuals):
        image = writer.image("pretrain_eval", f"eval-{i:04d}.png", attrs)
        for q, attr in enumerate(world.attributes):
            evaluation.append(_attribute_question(world, attrs, attr.name, next(positions), f"attr.{i:04d}.{q}",
                                                  image, rng))
    return evaluation + _knowledge_questions(world, pretrain_species, 1, rng)
