"""The one on-disk layout of every dataset in the study, synthetic or real.

A dataset is a folder holding

* ``annotations.jsonl``: one multiple-choice question per line with K-VISCUIT's fields
  ``question``, ``options``, ``answer`` (0-based index), ``category``, ``id_``,
  ``question_type`` and ``image_path`` (relative to ``images/``; ``null`` for a
  text-only question), plus optional fields such as ``descriptions`` (a mapping from
  describer or quality level to a text that stands in for the image) and ``subject``
  (the species or object shown, in the synthetic worlds);
* ``images/``: the image files;
* ``README.md``: a dataset card (generated for the datasets this project writes).

``question_type`` is 1 (recognise what is shown) or 2 (knowledge about it, answerable only
by recognising it); the worlds' pretraining material also uses 0 (a visual attribute).

:func:`load_dataset` validates a folder and reports every problem as one clear
:class:`~textonly.core.errors.DatasetError`; questions whose image file is missing are dropped
and reported (K-VISCUIT as published lacks a few of its images).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from tqdm.auto import tqdm

from textonly.core.errors import DatasetError
from textonly.core.fileio import atomic_directory, dumps_jsonl, write_text_atomic
from textonly.data.images import check_image, confined_file

ANNOTATIONS = "annotations.jsonl"
IMAGES = "images"
REQUIRED_FIELDS = ("question", "options", "answer", "category", "id_", "question_type", "image_path")
QUESTION_TYPES = (0, 1, 2)
NUM_OPTIONS = 4


@dataclass
class Dataset:
    """A validated dataset: its folder, its usable questions and what was dropped."""

    root: Path
    records: list[dict]
    dropped: list[dict] = field(default_factory=list)  # {"id_", "image_path", "reason"}
    renamed: list[dict] = field(default_factory=list)  # {"id_", "new_id", "line"}: reused ids

    def image_file(self, record: dict) -> Path | None:
        """The image file of a question (``None`` for a text-only question)."""
        if record.get("image_path") is None:
            return None
        return safe_image_file(self.root, record["image_path"], str(self.root / ANNOTATIONS))

    def counts(self) -> dict[str, dict]:
        """Counts of usable questions per ``question_type`` and per ``category``."""
        return count_questions(self.records)

    def __len__(self) -> int:
        return len(self.records)


def count_questions(records: Iterable[dict]) -> dict[str, dict]:
    """Counts of questions per ``question_type`` and per ``category``."""
    records = list(records)
    return {
        "question_type": dict(sorted(Counter(r["question_type"] for r in records).items())),
        "category": dict(sorted(Counter(r["category"] for r in records).items())),
    }


def balanced_positions(n: int, rng, k: int = NUM_OPTIONS) -> list[int]:
    """``n`` answer positions in ``0..k-1``, each used equally often (up to one), in random order."""
    positions = (list(range(k)) * (n // k + 1))[:n]
    return [positions[i] for i in rng.permutation(n)]


def _read_lines(path: Path) -> list[tuple[int, str]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: not found (a dataset folder needs {ANNOTATIONS})") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be read ({exc.strerror})") from None
    lines = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetError(
                f"{path}, line {number}: not valid UTF-8 text (byte {exc.start} of the line)"
            ) from None
        if text.strip():
            lines.append((number, text))
    return lines


def _check_record(record: object, where: str, num_options: int | None) -> dict:
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [f for f in REQUIRED_FIELDS if f not in record]
    if missing:
        raise DatasetError(f"{where}: missing field(s) {', '.join(missing)}")
    if not isinstance(record["question"], str) or not record["question"].strip():
        raise DatasetError(f"{where}: 'question' must be a non-empty string")
    options = record["options"]
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise DatasetError(f"{where}: 'options' must be a list of strings")
    if num_options is not None and len(options) != num_options:
        raise DatasetError(f"{where}: {len(options)} options, expected {num_options}")
    if len(options) < 2:
        raise DatasetError(f"{where}: {len(options)} option(s), a question needs at least 2")
    if len(set(options)) != len(options):
        raise DatasetError(f"{where}: repeated option in {options}")
    answer = record["answer"]
    if not isinstance(answer, int) or isinstance(answer, bool):
        raise DatasetError(f"{where}: 'answer' must be an integer option index, got {answer!r}")
    if not 0 <= answer < len(options):
        raise DatasetError(f"{where}: answer index {answer} out of range for {len(options)} options")
    if record["question_type"] not in QUESTION_TYPES or isinstance(record["question_type"], bool):
        raise DatasetError(
            f"{where}: 'question_type' must be one of {QUESTION_TYPES}, got {record['question_type']!r}"
        )
    if not isinstance(record["category"], str) or not record["category"]:
        raise DatasetError(f"{where}: 'category' must be a non-empty string")
    if not isinstance(record["id_"], (str, int)) or isinstance(record["id_"], bool):
        raise DatasetError(f"{where}: 'id_' must be a string or an integer")
    image_path = record["image_path"]
    if image_path is not None and (not isinstance(image_path, str) or not image_path):
        raise DatasetError(f"{where}: 'image_path' must be a relative path string or null")
    descriptions = record.get("descriptions")
    if descriptions is not None and not (
        isinstance(descriptions, dict) and all(isinstance(v, str) for v in descriptions.values())
    ):
        raise DatasetError(f"{where}: 'descriptions' must map names to strings")
    return record


def safe_image_file(root: Path, image_path: str, where: str) -> Path:
    """The image file that ``image_path`` names, refusing any path (or symlink) that leaves ``images/``."""
    return confined_file(Path(root) / IMAGES, image_path, where)


def load_dataset(
    root: str | os.PathLike,
    *,
    num_options: int | None = NUM_OPTIONS,
    check_images: bool = True,
    drop_missing_images: bool = True,
    strict_ids: bool = False,
    progress: bool = False,
) -> Dataset:
    """Read and validate a dataset folder.

    Every malformed line, duplicate id, bad option list, out-of-range answer, unsafe path
    or unreadable image raises :class:`DatasetError` naming the file and line. A question
    whose image file does not exist is dropped and listed in ``Dataset.dropped`` (or
    raises, with ``drop_missing_images=False``).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a dataset folder (no such directory)")
    path = root / ANNOTATIONS
    records: list[dict] = []
    dropped: list[dict] = []
    seen: dict[object, tuple[int, str]] = {}
    renamed: list[dict] = []
    checked: dict[Path, None] = {}
    lines = _read_lines(path)
    if not lines:
        raise DatasetError(f"{path}: no questions")
    for number, text in tqdm(lines, desc=f"checking {root.name}", disable=not progress, unit="q"):
        where = f"{path}, line {number}"
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: malformed JSON ({exc.msg} at column {exc.colno})") from None
        _check_record(record, where, num_options)
        key = record["id_"]
        if key in seen:
            first_line, first_question = seen[key]
            if strict_ids or record["question"] == first_question:
                raise DatasetError(f"{where}: duplicate id_ {key!r} (first on line {first_line})")
            # A different question under a reused id (K-VISCUIT as published does this 64
            # times): keep it under a distinct id so predictions can still be paired by id.
            copy = 2
            while f"{key}#{copy}" in seen:
                copy += 1
            renamed.append({"id_": key, "new_id": f"{key}#{copy}", "line": number})
            key = record["id_"] = f"{key}#{copy}"
        seen[key] = (number, record["question"])
        if record["image_path"] is not None:
            image = safe_image_file(root, record["image_path"], where)
            if not image.is_file():
                if not drop_missing_images:
                    raise DatasetError(f"{where}: image {record['image_path']!r} is missing")
                dropped.append({"id_": key, "image_path": record["image_path"], "reason": "image missing"})
                continue
            if check_images and image not in checked:
                check_image(image, where)
                checked[image] = None
        records.append(record)
    return Dataset(root=root, records=records, dropped=dropped, renamed=renamed)


def write_dataset(
    root: str | os.PathLike,
    records: Iterable[dict],
    *,
    card: str | None = None,
    images: dict[str, bytes] | None = None,
) -> Path:
    """Write a dataset folder atomically: annotations, optional image bytes and a card."""
    root = Path(root)
    with atomic_directory(root) as tmp:
        (tmp / IMAGES).mkdir()
        for name, data in (images if images is not None else {}).items():
            target = tmp / IMAGES / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        write_text_atomic(tmp / ANNOTATIONS, dumps_jsonl(records))
        if card is not None:
            write_text_atomic(tmp / "README.md", card)
    return root


def counts_table(counts: dict[str, dict], title: str = "") -> str:
    """A Markdown table of counts per ``question_type`` and ``category``."""
    lines = [f"**{title}**", ""] if title else []
    lines += ["| question_type | questions |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in counts["question_type"].items()]
    lines += ["", "| category | questions |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in counts["category"].items()]
    return "\n".join(lines) + "\n"


def format_report(dataset: Dataset) -> str:
    """The human-readable summary that ``python -m textonly data check`` prints."""
    counts = dataset.counts()
    total = len(dataset.records) + len(dataset.dropped)
    out = [f"{dataset.root}: {total} questions, {len(dataset.records)} usable"]
    if dataset.dropped:
        ids = ", ".join(str(d["id_"]) for d in dataset.dropped)
        images = sorted({d["image_path"] for d in dataset.dropped})
        out.append(
            f"dropped {len(dataset.dropped)} question(s) whose image is missing "
            f"({len(images)} image(s): {', '.join(images)}): {ids}"
        )
    if dataset.renamed:
        out.append(
            f"renamed {len(dataset.renamed)} reused id_(s) on different questions: "
            + ", ".join(f"{r['id_']} -> {r['new_id']}" for r in dataset.renamed[:5])
            + (", ..." if len(dataset.renamed) > 5 else "")
        )
    text_only = sum(1 for r in dataset.records if r["image_path"] is None)
    if text_only:
        out.append(f"{text_only} text-only question(s) (image_path null)")
    out.append("per question_type: " + ", ".join(f"{k}: {v}" for k, v in counts["question_type"].items()))
    out.append("per category:")
    width = max(len(str(k)) for k in counts["category"])
    out += [f"  {str(k).ljust(width)}  {v}" for k, v in counts["category"].items()]
    return "\n".join(out)
