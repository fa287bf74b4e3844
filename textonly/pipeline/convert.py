"""Convert an image-text dataset into its text-only twin: a description of each image.

``convert(data, describer, out)`` writes ``out`` in the layout of :mod:`textonly.data.layout`:
the same records under the same ids, each question with an image gaining
``descriptions[<label>]`` (what ``text_only`` training puts in place of the image), the
same images (hard-linked where possible, else copied) so the twin can still be evaluated
with them, a dataset card ``README.md`` and ``convert.json`` (the build's fingerprint and
settings, written last). A repeat with the same inputs is skipped. Each image is described
once, however many questions show it, by one of the describers of
:mod:`textonly.pipeline.describers` (``oracle``, ``captioner``, ``openai``).

The prompts of the captioner and openai describers live in ``describe_prompts.yaml`` beside
this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from pathlib import Path

from tqdm.auto import tqdm

from textonly import __version__
from textonly.data.layout import ANNOTATIONS, IMAGES, count_questions, counts_table, load_dataset, safe_image_file
from textonly.core.errors import TextonlyError
from textonly.core.fileio import (atomic_directory, build_key, dumps_json, dumps_jsonl, finished_build, link_or_copy,
                                  module_sources, read_yaml, write_text_atomic)
from textonly.pipeline import describers
from textonly.pipeline.describers import ImageItem, Oracle, make_describer

PROMPTS_FILE = Path(__file__).with_name("describe_prompts.yaml")
MARKER = "convert.json"


# --- prompts ---------------------------------------------------------------------------

def load_prompts(path: str | os.PathLike | None = None) -> dict:
    """The prompt configuration (``default``, ``embedded``, ``prompts``), checked."""
    path = Path(path) if path is not None else PROMPTS_FILE
    config = read_yaml(path)
    prompts = config.get("prompts") if isinstance(config, dict) else None
    if not isinstance(prompts, dict) or not prompts:
        raise TextonlyError(f"{path}: needs a 'prompts' mapping of key -> {{text, match}}")
    for key, entry in prompts.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("text"), str) and entry["text"].strip()
                and isinstance(entry.get("match", []), list)):
            raise TextonlyError(f"{path}: prompt {key!r} needs a non-empty 'text' and a 'match' list")
    for name in ("default", "embedded"):
        if config.get(name) not in prompts:
            raise TextonlyError(f"{path}: '{name}' must name one of the prompts ({', '.join(prompts)})")
    return config


def dataset_prompt_key(root: Path, config: dict) -> str:
    """The prompt key whose ``match`` fragments occur in the dataset's folder names or card title."""
    card = root / "README.md"
    title = card.read_text(encoding="utf-8").partition("\n")[0] if card.is_file() else ""
    haystack = " ".join([*root.resolve().parts[-3:], title]).lower()
    for key, entry in config["prompts"].items():
        if any(fragment.lower() in haystack for fragment in entry.get("match", [])):
            return key
    return config["default"]


# --- conversion ------------------------------------------------------------------------

def _raw_records(root: Path) -> list[dict]:
    """The questions as written (original ids, dropped ones included), after load_dataset validated them."""
    lines = (root / ANNOTATIONS).read_bytes().split(b"\n")
    return [json.loads(line) for line in lines if line.strip()]


def _images(root: Path, records: list[dict]) -> list[ImageItem]:
    """Each existing image once, in order of first use, with the questions that show it."""
    items: dict[str, ImageItem] = {}
    for record in records:
        name = record["image_path"]
        if name is None:
            continue
        if name not in items:
            file = safe_image_file(root, name, str(root / ANNOTATIONS))
            if not file.is_file():
                continue  # dropped by load_dataset too; the twin keeps the question as it is
            items[name] = ImageItem(name, file, hashlib.sha256(file.read_bytes()).hexdigest())
        items[name].records.append(record)
    return list(items.values())


def _card(source: Path, out: Path, describer, prompt: dict | None, records: list[dict], images: list[ImageItem],
          descriptions: dict[str, str]) -> str:
    label = describer.label
    with_image = sum(len(item.records) for item in images)
    lines = [
        f"# `{out.name}`: a text-only twin with `{label}` descriptions",
        "",
        (f"Made by `python -m textonly convert` (textonly {__version__}) from `{source}`. Every question "
         f"with an image keeps it and gains `descriptions[\"{label}\"]`, a description of its image that "
         "`text_only` training puts in place of the image; the images are the source's (hard-linked where "
         "possible), so the same questions can still be asked with them (`image_text`, evaluation). "
         f"{len(images)} image(s) were described, each once, for {with_image} question(s)."),
        "",
        "| describer | setting |",
        "|---|---|",
        f"| label | `{label}` |",
    ]
    # scalars only: the checkpoint's file sizes and times are in convert.json
    lines += [f"| {k} | `{v}` |" for k, v in describer.settings.items() if not isinstance(v, (dict, list))]
    if prompt is not None:
        lines += ["", f"Prompt (`{prompt['key']}`, from `textonly/pipeline/{PROMPTS_FILE.name}`):", "",
                  "> " + prompt["text"]]
    without = len(records) - with_image
    if without:
        lines += ["", (f"{without} question(s) have no description: no image (`image_path` null), or an "
                       "image missing from the source (dropped on loading, as there).")]
    lines += ["", counts_table(count_questions(records))]
    example = images[0]
    lines += ["## Example", "", f"Image `{example.name}`, described as:", "", "> " + descriptions[example.name], ""]
    return "\n".join(lines)


def _check_arguments(source: Path, out: Path, describer: str, *, quality: str | None, model, prompt: str | None,
                     max_new_tokens: int, batch_size: int) -> None:
    """Refuse arguments that do not go together, before any work."""
    if describer not in describers.DESCRIBERS:
        raise TextonlyError(f"describer {describer!r}: choose from {', '.join(describers.DESCRIBERS)}")
    if out.resolve() == source.resolve():
        raise TextonlyError(f"{out}: the output must not be the source dataset")
    if describer != "oracle" and quality is not None:
        raise TextonlyError("a description quality is for the oracle describer only")
    if describer == "oracle" and (model is not None or prompt is not None):
        raise TextonlyError("the oracle describer takes no model and no prompt (it reads the world's descriptions)")
    if max_new_tokens < 1 or batch_size < 1:
        raise TextonlyError("max_new_tokens and batch_size must be at least 1")


def _choose_prompt(worker, source: Path, prompt: str | None, prompts_file) -> dict | None:
    """The prompt (``key``, ``text``) the describer is asked with, set on it; ``None`` for the oracle."""
    if isinstance(worker, Oracle):
        return None
    config = load_prompts(prompts_file)
    if prompt is not None and prompt not in config["prompts"]:
        raise TextonlyError(f"prompt {prompt!r}: choose from {', '.join(config['prompts'])}")
    if prompt is None:
        # the embedded VLMs caption only when asked as in their pretraining
        embedded = getattr(worker, "embedded", False)
        prompt = config["embedded"] if embedded else dataset_prompt_key(source, config)
    chosen = {"key": prompt, "text": config["prompts"][prompt]["text"].strip()}
    worker.prompt = chosen["text"]
    return chosen


def _with_descriptions(records: list[dict], label: str, descriptions: dict[str, str]) -> list[dict]:
    """The records, each question with a described image gaining ``descriptions[label]``."""
    converted = []
    for record in records:
        text = descriptions.get(record["image_path"]) if record["image_path"] is not None else None
        if text is not None:
            record = {**record, "descriptions": {**(record.get("descriptions") or {}), label: text}}
        converted.append(record)
    return converted


def convert(data: str | os.PathLike, describer: str, out: str | os.PathLike, *, quality: str | None = None,
            model=None, prompt: str | None = None, prompts_file: str | os.PathLike | None = None,
            cache: str | os.PathLike | None = None, max_new_tokens: int = 256, batch_size: int = 16,
            max_attempts: int = 6, backoff_s: float = 1.0, timeout_s: float = 120.0, force: bool = False,
            progress: bool = True) -> Path:
    """Write the text-only twin of the dataset ``data`` into ``out``; returns ``out``.

    ``describer``: one of :data:`textonly.pipeline.describers.DESCRIBERS`. ``quality``: the
    oracle's description quality (default ``full``). ``model``: the captioner's checkpoint folder,
    hub id or loaded ``(model, processor)`` pair; the openai model name (default ``gpt-4o``).
    ``prompt``: a key of the prompt file (default: the embedded prompt for the project's own
    VLMs, else the one whose ``match`` fits the dataset's name or card, else the file's
    default). ``cache``: the openai answers' folder (default ``<out's parent>/description-cache``).
    ``max_new_tokens`` bounds a description; ``batch_size`` is the captioner's;
    ``max_attempts``, ``backoff_s`` (first wait, doubled each retry) and ``timeout_s`` are
    the endpoint's. The same inputs already converted in ``out`` are skipped unless
    ``force``.
    """
    source, out = Path(data), Path(out)
    _check_arguments(source, out, describer, quality=quality, model=model, prompt=prompt,
                     max_new_tokens=max_new_tokens, batch_size=batch_size)
    load_dataset(source)  # every problem of the source reported before any work
    records = _raw_records(source)
    images = _images(source, records)
    if not images:
        raise TextonlyError(f"{source}: no question with an image; nothing to describe")
    worker = make_describer(describer, quality=quality, model=model, max_new_tokens=max_new_tokens,
                            batch_size=batch_size, max_attempts=max_attempts, backoff_s=backoff_s,
                            timeout_s=timeout_s,
                            cache=Path(cache) if cache is not None else out.resolve().parent / "description-cache")
    if isinstance(worker, Oracle):
        worker.check(source, images)
    chosen = _choose_prompt(worker, source, prompt, prompts_file)

    settings = {"describer": describer, "description": worker.label, "settings": worker.settings, "prompt": chosen}
    key = build_key(settings, (source / ANNOTATIONS).read_bytes(), *(item.sha256 for item in images),
                    *module_sources(sys.modules[__name__], describers))
    if not force and finished_build(out / MARKER, key):
        return out
    with tqdm(total=len(images), desc=f"describing ({worker.label})", unit="img", disable=not progress) as bar:
        descriptions = worker.describe(images, bar)
    empty = sorted(name for name, text in descriptions.items() if not text)
    if empty:
        warnings.warn(f"{worker.label}: {len(empty)} empty description(s), e.g. of image {empty[0]}", stacklevel=2)
    converted = _with_descriptions(records, worker.label, descriptions)

    with atomic_directory(out) as tmp:
        (tmp / IMAGES).mkdir()
        for item in images:
            link_or_copy(item.file, tmp / IMAGES / item.name)
        write_text_atomic(tmp / ANNOTATIONS, dumps_jsonl(converted))
        write_text_atomic(tmp / "README.md", _card(source, out, worker, chosen, converted, images, descriptions))
        # the marker last: with the right fingerprint it says the build is complete
        write_text_atomic(tmp / MARKER, dumps_json({
            **settings, "fingerprint": key, "source": str(source), "questions": len(converted),
            "images": len(images), "empty_descriptions": len(empty), "textonly_version": __version__}))
    return out
