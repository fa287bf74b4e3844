"""Build a synthetic world: species/objects, study splits, pretraining material, dataset cards.

``build_world(name, out, seed=..., image_size=...)`` writes, atomically, ``out/<name>/``::

    world.json        the world's species/objects (attributes, facts, look-alike group, role)
                      and the build settings, for the describers and analyses
    README.md         the dataset card: counts, description examples, a grid of samples
    samples.png       that grid
    train/            study training set: one image per target, Type 1 questions
    val/              validation set: one more new image per target, a Type 1 and a Type 2
                      question (for choosing training recipes; never the test set)
    test/             study test set: new images of the targets, Type 1 + Type 2 questions
    pretrain/         pretraining material (no target image): attribute questions with
                      images (question_type 0), which-kind and fact questions on images of
                      pretraining kinds (1, 2), text knowledge questions about pretraining
                      kinds (image_path null), captions.jsonl and text.jsonl
    pretrain_eval/    held-out generic individuals (attribute questions) and knowledge
                      questions about pretraining species in a different wording

Every dataset folder follows the layout of :mod:`textonly.data`. The same seed gives
byte-identical files: each image has its own seed, so rendering order does not matter.
"""

from __future__ import annotations

import os
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from textonly import __version__
from textonly.data import ANNOTATIONS, IMAGES, balanced_positions, count_questions, counts_table
from textonly.errors import TextonlyError
from textonly.fileio import atomic_directory, build_key, dumps_json, dumps_jsonl, finished_build
from textonly.worlds import text
from textonly.worlds.render import is_drawable, render
from textonly.worlds.vocab import WORLDS, World


@dataclass(frozen=True)
class Sizes:
    """How much of a world to make. Defaults mirror the paper's dataset sizes."""

    groups: int
    group_size: int
    targets: int
    test_images_per_target: int
    type2_questions: int
    generic_images: int
    images_per_pretrain_species: int
    attribute_questions_per_image: int
    eval_generic_images: int


SIZES = {
    # BUTTERFLY: 100 training samples; 400 test questions = 200 Type 1 + 200 Type 2.
    "wings": Sizes(groups=30, group_size=5, targets=100, test_images_per_target=2, type2_questions=200,
                   generic_images=2400, images_per_pretrain_species=16, attribute_questions_per_image=6,
                   eval_generic_images=300),
    # K-VISCUIT: 237 training samples; 657 test questions = 237 Type 1 + 420 Type 2, 10 categories.
    "heritage": Sizes(groups=60, group_size=5, targets=237, test_images_per_target=1, type2_questions=420,
                      generic_images=2400, images_per_pretrain_species=16, attribute_questions_per_image=6,
                      eval_generic_images=300),
}


def _rng(seed: int, *keys: str | int) -> np.random.Generator:
    """A generator that depends only on the seed and the keys (stable across runs and processes)."""
    parts = [seed] + [k if isinstance(k, int) else zlib.crc32(k.encode()) for k in keys]
    return np.random.default_rng(parts)


def category_of(world: World, attributes: dict[str, str]) -> str:
    attr = world.attribute(world.category_attribute)
    return world.categories[attr.values.index(attributes[world.category_attribute])]


def _random_attributes(world: World, rng: np.random.Generator, fixed: dict[str, str] | None = None) -> dict[str, str]:
    while True:
        attrs = {a.name: text.pick(rng, a.values) for a in world.attributes}
        attrs.update(fixed or {})
        if is_drawable(world.name, attrs):
            return attrs


def _key(attributes: dict[str, str]) -> tuple:
    return tuple(sorted(attributes.items()))


def make_species(world: World, sizes: Sizes, seed: int) -> list[dict]:
    """Species/objects in look-alike groups: a prototype and variants that change one attribute each.

    Any two members of a group therefore differ in one or two attributes; the attribute
    that fixes the category is never varied. Facts are distinct inside a group where the
    fact has enough values, so a Type 2 answer needs the right member, not just the group.
    """
    rng = _rng(seed, world.name, "species")
    cat_attr = world.attribute(world.category_attribute)
    used: set[tuple] = set()
    names: set[str] = set()
    species: list[dict] = []

    def new_name(genus: str | None) -> str:
        while True:
            word = text.made_up_word(rng, int(rng.integers(2, 4)))
            name = f"{word} {genus}" if genus else f"{word} {cat_value}"
            if name not in names and word.lower() != (genus or "").lower():
                names.add(name)
                return name

    for g in range(sizes.groups):
        cat_value = cat_attr.values[g % len(cat_attr.values)]
        while True:
            proto = _random_attributes(world, rng, {cat_attr.name: cat_value})
            if _key(proto) not in used:
                break
        members = [proto]
        used.add(_key(proto))
        variable = [a for a in world.attributes if a.name != cat_attr.name]
        while len(members) < sizes.group_size:
            attr = text.pick(rng, variable)
            variant = {**proto, attr.name: text.pick(rng, [v for v in attr.values if v != proto[attr.name]])}
            if is_drawable(world.name, variant) and _key(variant) not in used:
                used.add(_key(variant))
                members.append(variant)
        genus = text.made_up_word(rng, 2) if world.name == "wings" else None
        facts_per_member = []
        fact_values = {}
        for fact in world.facts:
            values = list(fact.values)
            replace = len(values) < len(members)
            fact_values[fact.name] = [values[i] for i in rng.choice(len(values), size=len(members), replace=replace)]
        for i, attrs in enumerate(members):
            facts_per_member.append({f: fact_values[f][i] for f in fact_values})
        for i, attrs in enumerate(members):
            species.append({
                "name": new_name(genus),
                "group": g,
                "category": category_of(world, attrs),
                "role": "pretrain" if i == 0 else "candidate",
                "attributes": attrs,
                "facts": facts_per_member[i],
            })
    candidates = [s for s in species if s["role"] == "candidate"]
    if len(candidates) < sizes.targets:
        raise TextonlyError(f"{world.name}: {len(candidates)} candidate targets, {sizes.targets} requested")
    chosen = set(rng.choice(len(candidates), size=sizes.targets, replace=False).tolist())
    for i, s in enumerate(candidates):
        s["role"] = "target" if i in chosen else "pretrain"
    return species


def _options(answer_text: str, near: list[str], far: list[str], answer_pos: int, rng: np.random.Generator,
             n_near: int = 2) -> tuple[list[str], int]:
    """Four options: the answer at ``answer_pos``, distractors mostly from ``near`` (the look-alikes)."""
    near = [x for x in dict.fromkeys(near) if x != answer_text]
    far = [x for x in dict.fromkeys(far) if x != answer_text and x not in near]
    take_near = min(n_near, len(near))
    picks = [near[i] for i in rng.choice(len(near), size=take_near, replace=False)] if take_near else []
    rest = [x for x in far if x not in picks] + [x for x in near if x not in picks]
    need = 3 - len(picks)
    if len(rest) < need:
        raise TextonlyError(f"not enough distinct options for {answer_text!r}")
    # far ones first (random among them), near leftovers only if the pool is short
    far_rest = [x for x in rest if x in far]
    pool = far_rest if len(far_rest) >= need else rest
    picks += [pool[i] for i in rng.choice(len(pool), size=need, replace=False)]
    picks = [picks[i] for i in rng.permutation(3)]
    return picks[:answer_pos] + [answer_text] + picks[answer_pos:], answer_pos


class _Writer:
    """Collects render jobs and records for one world, then writes them."""

    def __init__(self, world: World, seed: int, image_size: int):
        self.world, self.seed, self.image_size = world, seed, image_size
        self.jobs: list[tuple[str, str, dict, tuple]] = []  # (relative path, world, attributes, rng keys)

    def image(self, split: str, name: str, attributes: dict) -> str:
        self.jobs.append((f"{split}/{IMAGES}/{name}", self.world.name, attributes, (split, name)))
        return name


def _render_job(args: tuple) -> None:
    root, rel, world, attributes, keys, seed, size = args
    image = render(world, attributes, _rng(seed, world, *keys), size)
    image.save(Path(root) / rel, format="PNG")


class _Questions:
    """Type 1 and Type 2 questions about a named kind, distractors mostly from its look-alike group."""

    def __init__(self, world: World, species: list[dict], rng: np.random.Generator):
        self.world, self.species, self.rng = world, species, rng
        self.by_group: dict[int, list[dict]] = {}
        for s in species:
            self.by_group.setdefault(s["group"], []).append(s)
        self.all_names = [s["name"] for s in species]

    def type1(self, subject: dict, pos: int, qid: str, image: str, desc: dict | None) -> dict:
        near = [s["name"] for s in self.by_group[subject["group"]]]
        # the rest from the same category (a dish among dishes), so no option gives itself away
        same = [s["name"] for s in self.species
                if s["category"] == subject["category"] and s["group"] != subject["group"]]
        options, answer = _options(subject["name"], near, same if len(same) >= 3 else self.all_names, pos, self.rng)
        record = {"question": text.pick(self.rng, self.world.type1_questions), "options": options, "answer": answer,
                  "category": subject["category"], "id_": qid, "question_type": 1, "image_path": image,
                  "subject": subject["name"], "asks": "name"}
        return {**record, "descriptions": desc} if desc else record

    def type2(self, subject: dict, fact_name: str, pos: int, qid: str, image: str, desc: dict | None) -> dict:
        fact = next(f for f in self.world.facts if f.name == fact_name)
        near = [s["facts"][fact_name] for s in self.by_group[subject["group"]]]
        options, answer = _options(subject["facts"][fact_name], near, list(fact.values), pos, self.rng)
        record = {"question": text.pick(self.rng, fact.questions).format(thing=self.world.thing), "options": options,
                  "answer": answer, "category": subject["category"], "id_": qid, "question_type": 2,
                  "image_path": image, "subject": subject["name"], "asks": fact_name}
        return {**record, "descriptions": desc} if desc else record


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


def _attribute_question(world: World, attributes: dict, attr_name: str, pos: int, qid: str, image: str,
                        rng: np.random.Generator) -> dict:
    attr = world.attribute(attr_name)
    others = [v for v in attr.values + attr.extra_options if v != attributes[attr_name]]
    options, answer = _options(attributes[attr_name], [], others, pos, rng)
    return {"question": attr.question.format(thing=world.thing), "options": options, "answer": answer,
            "category": attr_name, "id_": qid, "question_type": 0, "image_path": image, "asks": attr_name}


def _knowledge_question(world: World, subject: dict, fact, template: int, pos: int, qid: str,
                        rng: np.random.Generator) -> dict:
    question = fact.questions[template].format(thing=world.thing).replace(
        f"the {world.thing} in the image", f"the {subject['name']}")
    options, answer = _options(subject["facts"][fact.name], [], list(fact.values), pos, rng)
    return {"question": question, "options": options, "answer": answer, "category": subject["category"],
            "id_": qid, "question_type": 2, "image_path": None, "subject": subject["name"], "asks": fact.name}


def _pretraining(world: World, sizes: Sizes, species: list[dict], seed: int, writer: _Writer):
    """Pretraining material: captions, attribute questions, knowledge questions, world text; no target image."""
    rng = _rng(seed, world.name, "pretrain")
    forbidden = {_key(s["attributes"]) for s in species}  # generic individuals are none of the named ones
    pretrain_species = [s for s in species if s["role"] == "pretrain"]

    def generic(n: int, stream: str) -> list[dict]:
        grng = _rng(seed, world.name, stream)
        out = []
        while len(out) < n:
            attrs = _random_attributes(world, grng)
            if _key(attrs) not in forbidden:
                out.append(attrs)
        return out

    individuals = [(None, a) for a in generic(sizes.generic_images, "generic")]
    individuals += [(s, s["attributes"]) for s in pretrain_species for _ in range(sizes.images_per_pretrain_species)]
    order = rng.permutation(len(individuals))
    individuals = [individuals[i] for i in order]

    captions, questions = [], []
    n_attr = len(individuals) * sizes.attribute_questions_per_image
    positions = iter(balanced_positions(n_attr, rng))
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
    # the study's own task on pretraining kinds (never targets): which kind is shown, a fact about it
    named = [(i, subject) for i, (subject, _) in enumerate(individuals) if subject is not None]
    task = _Questions(world, species, _rng(seed, world.name, "pretrain-task"))
    task_positions = iter(balanced_positions(len(named), rng))
    for k, (i, subject) in enumerate(named):
        image = f"pretrain-{i:05d}.png"
        if k % 2 == 0:
            questions.append(task.type1(subject, next(task_positions), f"task.{i:05d}", image, None))
        else:
            fact = world.facts[(k // 2) % len(world.facts)].name
            questions.append(task.type2(subject, fact, next(task_positions), f"task.{i:05d}", image, None))
    knowledge_positions = iter(balanced_positions(len(pretrain_species) * len(world.facts), rng))
    for i, subject in enumerate(pretrain_species):
        for f, fact in enumerate(world.facts):
            questions.append(_knowledge_question(world, subject, fact, 0, next(knowledge_positions),
                                                 f"know.{i:04d}.{f}", rng))

    # world text about every named species/object, tagged with its role: the base model's
    # pretraining decides how much of it about the targets to use.
    by_group: dict[int, list[dict]] = {}
    for s in species:
        by_group.setdefault(s["group"], []).append(s)
    world_text = []
    for s in species:
        lookalikes = [o for o in by_group[s["group"]] if o is not s][:2]
        for j, line in enumerate(text.world_statements(world, s, _rng(seed, world.name, "text", s["name"]), lookalikes)):
            world_text.append({"id_": f"text.{len(world_text):05d}", "subject": s["name"], "role": s["role"],
                               **line})

    # held-out evaluation: new generic individuals, every attribute asked; knowledge reworded
    evaluation = []
    eval_individuals = generic(sizes.eval_generic_images, "eval-generic")
    epos = iter(balanced_positions(len(eval_individuals) * len(world.attributes), rng))
    for i, attrs in enumerate(eval_individuals):
        image = writer.image("pretrain_eval", f"eval-{i:04d}.png", attrs)
        for q, attr in enumerate(world.attributes):
            evaluation.append(_attribute_question(world, attrs, attr.name, next(epos), f"attr.{i:04d}.{q}", image, rng))
    kpos = iter(balanced_positions(len(pretrain_species) * len(world.facts), rng))
    for i, subject in enumerate(pretrain_species):
        for f, fact in enumerate(world.facts):
            evaluation.append(_knowledge_question(world, subject, fact, 1, next(kpos), f"know.{i:04d}.{f}", rng))
    return captions, questions, world_text, evaluation


def _sample_grid(root: Path, records: list[dict], columns: int = 8, rows: int = 4) -> Image.Image:
    """A grid of test images labelled with what they show (first Type 1 questions)."""
    shown = [r for r in records if r["question_type"] == 1][: columns * rows]
    cell = 128
    grid = Image.new("RGB", (columns * cell, rows * (cell + 14)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for k, r in enumerate(shown):
        with Image.open(root / "test" / IMAGES / r["image_path"]) as im:
            tile = im.convert("RGB").resize((cell, cell), Image.NEAREST)
        x, y = (k % columns) * cell, (k // columns) * (cell + 14)
        grid.paste(tile, (x, y))
        draw.text((x + 2, y + cell + 1), r["subject"][:20], fill=(0, 0, 0))
    return grid


def _card(world: World, sizes: Sizes, species: list[dict], splits: dict[str, list[dict]], settings: dict) -> str:
    roles = {r: sum(1 for s in species if s["role"] == r) for r in ("target", "pretrain")}
    example = splits["train"][0]
    lines = [
        f"# The `{world.name}` world (synthetic)",
        "",
        f"Generated by `python -m textonly worlds build` (textonly {__version__}, seed {settings['seed']}, "
        f"{settings['image_size']} px images). Regenerate it rather than edit it.",
        "",
        f"{len(species)} named {world.thing} kinds in {sizes.groups} look-alike groups of {sizes.group_size} "
        f"(members differ in one or two visual attributes): {roles['target']} *targets* of the study, "
        f"{roles['pretrain']} *pretraining* kinds. Visual attributes: "
        + ", ".join(f"`{a.name}` ({len(a.values)})" for a in world.attributes)
        + ". Non-visual facts (Type 2): " + ", ".join(f"`{f.name}` ({len(f.values)})" for f in world.facts) + ".",
        "",
        "![samples](samples.png)",
        "",
        "## Splits",
        "",
        "| split | questions | images | what |",
        "|---|---|---|---|",
    ]
    what = {
        "train": "one image per target, Type 1 (the study's training samples)",
        "val": "another new image per target, Type 1 and Type 2 (recipes are chosen here, never on test)",
        "test": "new images of the targets, Type 1 and Type 2",
        "pretrain": "generic individuals and pretraining kinds (no target image): attribute questions "
                    "(type 0), which-kind and fact questions on pretraining kinds' images (types 1, 2), "
                    "text knowledge questions (type 2, no image)",
        "pretrain_eval": "held-out generic individuals (every attribute asked) and reworded knowledge questions",
    }
    for name, records in splits.items():
        n_images = len({r["image_path"] for r in records if r["image_path"]})
        lines.append(f"| `{name}/` | {len(records)} | {n_images} | {what[name]} |")
    lines += ["", "Question types: 0 = a visual attribute, 1 = which kind is shown, 2 = a fact about it.", ""]
    for name in ("train", "test"):
        lines += [f"### `{name}/`", "", counts_table(count_questions(splits[name]))]
    lines += ["## Descriptions (what `text_only` training puts in place of the image)", "",
              f"For the first training sample (a {example['subject']}):", ""]
    for quality in text.QUALITIES:
        lines.append(f"- **{quality}**: {example['descriptions'][quality]}")
    lines += ["", "Also in `pretrain/`: `captions.jsonl` (image-caption pairs) and `text.jsonl` "
              "(text about every named kind, tagged with its `role`).", ""]
    return "\n".join(lines)


def settings_fingerprint(settings: dict) -> str:
    """A hash of the build settings and of the generator's source code: same hash, same files."""
    return build_key(settings, *(p.read_bytes() for p in sorted(Path(__file__).parent.glob("*.py"))))


def build_world(name: str, out: str | os.PathLike, *, seed: int = 0, image_size: int = 64,
                workers: int | None = None, force: bool = False, progress: bool = True) -> Path:
    """Build one world into ``out/<name>``, skipping the work when the same build is already there."""
    if name not in WORLDS:
        raise TextonlyError(f"unknown world {name!r}; choose from {', '.join(WORLDS)}")
    if not 16 <= image_size <= 1024:
        raise TextonlyError(f"--image-size {image_size}: choose between 16 and 1024 pixels")
    world, sizes = WORLDS[name], SIZES[name]
    settings = {"world": name, "seed": seed, "image_size": image_size, "sizes": asdict(sizes)}
    fingerprint = settings_fingerprint(settings)
    final = Path(out) / name
    if not force and finished_build(final / "world.json", fingerprint):
        return final
    species = make_species(world, sizes, seed)
    writer = _Writer(world, seed, image_size)
    train, test, val = _study_splits(world, sizes, species, seed, writer)
    captions, pretrain, world_text, evaluation = _pretraining(world, sizes, species, seed, writer)
    splits = {"train": train, "val": val, "test": test, "pretrain": pretrain, "pretrain_eval": evaluation}
    with atomic_directory(final) as tmp:
        for split in splits:
            (tmp / split / IMAGES).mkdir(parents=True)
        jobs = [(str(tmp), rel, w, attrs, keys, seed, image_size) for rel, w, attrs, keys in writer.jobs]
        workers = workers or min(os.cpu_count() or 1, 4)
        bar = tqdm(total=len(jobs), desc=f"rendering {name}", unit="img", disable=not progress)
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                for _ in pool.map(_render_job, jobs, chunksize=64):
                    bar.update()
        else:
            for job in jobs:
                _render_job(job)
                bar.update()
        bar.close()
        for split, records in splits.items():
            (tmp / split / ANNOTATIONS).write_text(dumps_jsonl(records), encoding="utf-8")
            (tmp / split / "README.md").write_text(
                f"# `{name}/{split}`\n\nPart of the `{name}` world; see `../README.md`.\n\n"
                + counts_table(count_questions(records)), encoding="utf-8")
        (tmp / "pretrain" / "captions.jsonl").write_text(dumps_jsonl(captions), encoding="utf-8")
        (tmp / "pretrain" / "text.jsonl").write_text(dumps_jsonl(world_text), encoding="utf-8")
        _sample_grid(tmp, test).save(tmp / "samples.png", format="PNG")
        (tmp / "README.md").write_text(_card(world, sizes, species, splits, settings), encoding="utf-8")
        # world.json last: its presence with the right fingerprint marks a finished build
        (tmp / "world.json").write_text(dumps_json({
            "fingerprint": fingerprint, "settings": settings, "textonly_version": __version__,
            "attributes": {a.name: list(a.values) for a in world.attributes},
            "facts": {f.name: list(f.values) for f in world.facts},
            "categories": list(world.categories), "species": species,
        }), encoding="utf-8")
    return final
