"""Training and test splits of the real datasets, in the study's layout (:data:`SPLITS`).

* ``by-image`` (:func:`split_by_image`): a dataset in the layout split by image with a
  seed, every question of an image on one side. K-VISCUIT publishes only its 657 test
  questions (the paper's 237 training images are not published), so the study splits those:
  a stated deviation from the paper.
* ``classes`` (:func:`split_classes`): a class-per-folder collection with a folder for the
  training images and one for the test images (``butterflies-100``: ``valid/`` and
  ``test/``), each side turned into Type 1 questions by
  :func:`~textonly.data.sources.from_folder`. The training side keeps ``per_class`` images of
  each class (the paper trains on one per species); a class without training images
  borrows them from the test folder, and they leave the test side.
* ``folder`` (:func:`split_folder`): a user's own split, a folder holding ``train/`` and
  ``test/`` in the layout; both are checked, and no image may appear on both sides.

Each writes ``OUT/train`` and ``OUT/test`` (datasets in the layout) and ``OUT/split.json``
(what was asked, the counts, which images went where, a fingerprint). The same inputs and
settings give the same split; a repeat whose ``split.json`` records the same fingerprint is
skipped.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from textonly import __version__
from textonly.core.errors import DatasetError, TextonlyError
from textonly.core.fileio import atomic_directory, build_key, dumps_json, finished_build, module_sources
from textonly.core.fileio import link_or_copy, write_text_atomic
from textonly.data.layout import ANNOTATIONS, IMAGES, count_questions, counts_table, load_dataset, write_dataset
from textonly.data.sources import class_images, from_folder

MARKER = "split.json"
SIDES = ("train", "test")


def _digest(files) -> str:
    """One hash of the names and bytes of ``files``: a changed source makes a new split."""
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.name).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def _command(kind: str, source: Path, settings: dict) -> str:
    """The command line that makes this split (for its cards and ``split.json``)."""
    flags = []
    for name, value in settings.items():
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        flags.append(f"{flag} {' '.join(str(v) for v in value)}" if isinstance(value, (list, tuple))
                     else f"{flag} {value}")
    return " ".join(["python -m textonly data split", kind, str(source), "--out OUT", *flags])


def _finish(out: Path, kind: str, source: Path, settings: dict, key: str, write_sides, notes: list[str]) -> Path:
    """Write both sides (``write_sides(tmp)`` returns which images went where) and the marker, atomically."""
    command = _command(kind, source, settings)
    with atomic_directory(out) as tmp:
        placed = write_sides(tmp, command)
        counts = {side: count_questions(load_dataset(tmp / side, num_options=None, check_images=False).records)
                  for side in SIDES}
        # the marker last: with the right fingerprint it says the split is complete
        write_text_atomic(tmp / MARKER, dumps_json({
            "kind": kind, "source": str(source), "settings": settings, "fingerprint": key, "command": command,
            "notes": notes, "questions": {s: sum(counts[s]["question_type"].values()) for s in SIDES},
            "counts": counts, "images": placed, "textonly_version": __version__}))
    return out


def _card(title: str, command: str, text: str, records: list[dict]) -> str:
    return (f"# {title}\n\nMade by `{command}`. {text}\n\n" + counts_table(count_questions(records)))


def _key(kind: str, settings: dict, *parts) -> str:
    return build_key({"kind": kind, **settings}, *parts, *module_sources(sys.modules[__name__]))


def _seeded_images(names: list[str], seed: int, test_fraction: float, max_images: int | None):
    """The images of each side: a seeded order of the sorted names, cut by ``max_images`` and
    ``test_fraction`` (each side keeps at least one image)."""
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    if max_images is not None:
        order = order[:max_images]
    if len(order) < 2:
        raise DatasetError(f"{len(order)} image(s): a split needs at least 2")
    n_test = min(max(round(test_fraction * len(order)), 1), len(order) - 1)
    return sorted(order[n_test:]), sorted(order[:n_test])


def split_by_image(source: str | os.PathLike, out: str | os.PathLike, *, seed: int = 0,
                   test_fraction: float = 0.5, max_images: int | None = None,
                   train_types: list[int] | None = None, force: bool = False) -> Path:
    """Split a dataset in the layout by image: a seeded ``test_fraction`` of its images (after
    keeping a seeded ``max_images`` of them, if given) with all their questions on the test side,
    the others on the training side. ``train_types``: the question types the training side keeps
    (``[1]``: recognition only, one per K-VISCUIT image, as the paper trains); the test side
    keeps every question. Questions whose image is missing are dropped, as ``data check`` reports."""
    source, out = Path(source), Path(out)
    if not 0 < test_fraction < 1:
        raise TextonlyError(f"test fraction {test_fraction}: give a number between 0 and 1")
    if max_images is not None and max_images < 2:
        raise TextonlyError(f"max images {max_images}: give 2 or more")
    dataset = load_dataset(source)
    groups: dict[str, list[dict]] = {}
    for record in dataset.records:  # a question without an image is a group of its own
        groups.setdefault(record["image_path"] or f"\0{record['id_']}", []).append(record)
    settings = {"seed": seed, "test_fraction": test_fraction, "max_images": max_images,
                "train_types": sorted(train_types) if train_types else None}
    files = sorted({dataset.image_file(r) for r in dataset.records if r["image_path"] is not None})
    key = _key("by-image", settings, (source / ANNOTATIONS).read_bytes(), _digest(files))
    if not force and finished_build(out / MARKER, key):
        return out
    train_names, test_names = _seeded_images(sorted(groups), seed, test_fraction, max_images)
    sides = {"train": [r for n in train_names for r in groups[n]
                       if not train_types or r["question_type"] in train_types],
             "test": [r for n in test_names for r in groups[n]]}
    if not sides["train"]:
        raise DatasetError(f"{source}: no training question of type(s) {train_types} on the training images")
    notes = [f"{len(dataset.dropped)} question(s) dropped: their image is missing"] if dataset.dropped else []

    def write_sides(tmp: Path, command: str) -> dict:
        for side, records in sides.items():
            text = (f"The {side} side of {source.name} split by image with seed {seed}: every question of an "
                    "image is on one side. Images are the source's, unchanged; they keep their own licence.")
            write_dataset(tmp / side, records, card=_card(f"{source.name}: {side} split (by image)", command,
                                                          text, records))
            for name in dict.fromkeys(r["image_path"] for r in records if r["image_path"] is not None):
                link_or_copy(dataset.image_file({"image_path": name}), tmp / side / IMAGES / name)
        return {"train": [n for n in train_names if not n.startswith("\0")],
                "test": [n for n in test_names if not n.startswith("\0")]}

    return _finish(out, "by-image", source, settings, key, write_sides, notes)


def _pick(files: list[Path], n: int | None, rng) -> list[Path]:
    """A seeded ``n`` of ``files`` (all of them for None), in file order."""
    if n is None or n >= len(files):
        return list(files)
    return sorted(files[i] for i in rng.choice(len(files), size=n, replace=False))


def _class_sides(source: Path, train_from: str, test_from: str, seed: int, per_class: int,
                 max_classes: int | None, test_per_class: int | None) -> tuple[dict, dict, list[str]]:
    """The image files of each class on each side, and notes on the classes that borrowed."""
    train_all, test_all = class_images(source / train_from), class_images(source / test_from)
    labels = sorted(set(train_all) | set(test_all))
    rng = np.random.default_rng(seed)
    if max_classes is not None:
        labels = sorted(labels[i] for i in rng.choice(len(labels), size=min(max_classes, len(labels)),
                                                      replace=False))
    train, test, notes = {}, {}, []
    for label in labels:
        pool = train_all.get(label, [])
        left = list(test_all.get(label, []))
        if not pool:  # borrowed from the test folder, and then not tested on
            pool = left
            train[label] = _pick(pool, per_class, rng)
            left = [f for f in left if f not in train[label]]
            notes.append(f"{label}: no image in {train_from}/; its training image(s) "
                         f"{', '.join(f.name for f in train[label])} come from {test_from}/ and leave the test side")
        else:
            train[label] = _pick(pool, per_class, rng)
        if left:
            test[label] = _pick(left, test_per_class, rng)
    return train, test, notes


def split_classes(source: str | os.PathLike, out: str | os.PathLike, *, seed: int = 0, train_from: str = "valid",
                  test_from: str = "test", per_class: int = 1, max_classes: int | None = None,
                  test_per_class: int | None = None, force: bool = False) -> Path:
    """Split a class-per-folder collection: ``per_class`` seeded images of each class from the
    folder ``train_from`` (the paper: one per species, from ``valid/``), the images of the folder
    ``test_from`` for testing (``test_per_class`` of each, default all). Each side becomes Type 1
    four-option questions through :func:`~textonly.data.sources.from_folder` (distractors drawn from
    that side's labels). ``max_classes``: a seeded subset of the classes (a quick run)."""
    source, out = Path(source), Path(out)
    if per_class < 1:
        raise TextonlyError(f"per class {per_class}: give 1 or more")
    train, test, notes = _class_sides(source, train_from, test_from, seed, per_class, max_classes, test_per_class)
    settings = {"seed": seed, "train_from": train_from, "test_from": test_from, "per_class": per_class,
                "max_classes": max_classes, "test_per_class": test_per_class}
    files = {side: [(label, f) for label, fs in chosen.items() for f in fs] for side, chosen in
             (("train", train), ("test", test))}
    key = _key("classes", settings, *(f"{side}/{label}/" for side in SIDES for label, _ in files[side]),
               _digest([f for side in SIDES for _, f in files[side]]))
    if not force and finished_build(out / MARKER, key):
        return out

    def write_sides(tmp: Path, command: str) -> dict:
        with tempfile.TemporaryDirectory(prefix=".classes-", dir=tmp) as staging:
            for side in SIDES:
                for label, file in files[side]:  # the side's class folders, as links to the source's images
                    (Path(staging) / side / label).mkdir(parents=True, exist_ok=True)
                    (Path(staging) / side / label / file.name).symlink_to(file.resolve())
                from_folder(Path(staging) / side, tmp / side, seed=seed)
        chosen = {"train": f"{per_class} image(s) of each class from {train_from}/",
                  "test": f"{test_per_class or 'all'} image(s) of each class from {test_from}/"}
        for side in SIDES:  # the card says how this side was made, not from which staging folder
            records = load_dataset(tmp / side, check_images=False).records
            text = (f"The {side} side of {source.name} (seed {seed}): {chosen[side]}, one Type 1 question each, "
                    "four options (the true label and random other labels of the side). Images are the source's, "
                    "unchanged; they keep their own licence." + "".join(f" {note}." for note in notes))
            write_text_atomic(tmp / side / "README.md",
                              _card(f"{source.name}: {side} split (butterfly species)", command, text, records))
        return {side: [f"{label}/{f.name}" for label, f in files[side]] for side in SIDES}

    return _finish(out, "classes", source, settings, key, write_sides, notes)


def split_folder(source: str | os.PathLike, out: str | os.PathLike, *, force: bool = False) -> Path:
    """A user's own split: ``source/train`` and ``source/test``, each a dataset in the layout, checked
    and linked into ``out``; an image (by content) on both sides is an error."""
    source, out = Path(source), Path(out)
    datasets = {}
    for side in SIDES:
        if not (source / side).is_dir():
            raise DatasetError(f"{source}: no {side}/ folder (a split folder holds train/ and test/ in the layout)")
        datasets[side] = load_dataset(source / side)
    names = {side: sorted({r["image_path"] for r in d.records if r["image_path"] is not None})
             for side, d in datasets.items()}
    hashes: dict[str, dict[str, str]] = {side: {} for side in SIDES}  # content hash -> the first image with it
    for side in SIDES:
        for name in names[side]:
            file = datasets[side].image_file({"image_path": name})
            hashes[side].setdefault(hashlib.sha256(file.read_bytes()).hexdigest(), name)
    shared = sorted(set(hashes["train"]) & set(hashes["test"]))
    if shared:
        first = shared[0]
        raise DatasetError(f"{source}: {len(shared)} image(s) on both sides, e.g. train/{IMAGES}/"
                           f"{hashes['train'][first]} = test/{IMAGES}/{hashes['test'][first]}")
    key = _key("folder", {}, *((source / side / ANNOTATIONS).read_bytes() for side in SIDES),
               *(h for side in SIDES for h in sorted(hashes[side])))
    if not force and finished_build(out / MARKER, key):
        return out

    def write_sides(tmp: Path, command: str) -> dict:
        for side in SIDES:
            shutil.copytree(source / side, tmp / side, copy_function=lambda a, b: link_or_copy(Path(a), Path(b)))
        return names

    return _finish(out, "folder", source, {}, key, write_sides, [])


#: kind -> the function that makes such a split (``data split KIND``, and a study dataset's ``split: {kind: ...}``).
SPLITS = {"by-image": split_by_image, "classes": split_classes, "folder": split_folder}


def split_options(kind: str) -> tuple[str, ...]:
    """The settings a kind of split takes (its keyword arguments, ``force`` aside)."""
    if kind not in SPLITS:
        raise TextonlyError(f"split kind {kind!r}: choose from {', '.join(SPLITS)}")
    parameters = inspect.signature(SPLITS[kind]).parameters.values()
    return tuple(p.name for p in parameters if p.kind is p.KEYWORD_ONLY and p.name != "force")


def make_split(kind: str, source: str | os.PathLike, out: str | os.PathLike, **settings) -> Path:
    """Make the split ``kind`` of ``source`` in ``out``; a setting that the kind does not take is an error."""
    unknown = sorted(set(settings) - {*split_options(kind), "force"})
    if unknown:
        raise TextonlyError(f"split {kind!r} takes no {', '.join(unknown)} (it takes: "
                            f"{', '.join(split_options(kind)) or 'nothing'})")
    return SPLITS[kind](source, out, **settings)
