"""Real datasets into the study's layout: class-per-folder images, and the paper's hub datasets.

* :func:`from_folder` turns a class-per-folder image collection (such as the 100-species
  butterfly images) into Type 1 four-option questions with seeded distractors.
* :func:`from_hub` fetches ``ddehun/k-viscuit`` or ``Dasool/butterflies_and_moths_vqa``
  through ``datasets`` (needs network) and writes it in the same layout; without a
  reachable hub it fails within seconds with a message that says so.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from textonly.data.images import check_image
from textonly.data.layout import balanced_positions, count_questions, counts_table, write_dataset
from textonly.core.errors import DatasetError, HubUnreachableError, TextonlyError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
HUB_DATASETS = ("ddehun/k-viscuit", "Dasool/butterflies_and_moths_vqa")


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-").lower() or "class"


def class_images(folder: Path) -> dict[str, list[Path]]:
    """``{class label: sorted image files}`` of a class-per-folder collection (empty classes left out)."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder (a class-per-folder collection)")
    classes = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            classes[sub.name] = files
    return classes


def from_folder(folder: str | os.PathLike, out: str | os.PathLike, *, seed: int = 0,
                question: str = "Which species is shown in the image?", category: str | None = None,
                num_options: int = 4) -> Path:
    """One Type 1 question per image: the folder's label and ``num_options - 1`` other labels."""
    folder = Path(folder)
    classes = class_images(folder)
    if len(classes) < num_options:
        raise DatasetError(f"{folder}: {len(classes)} class folder(s) with images; {num_options}-option "
                           f"questions need at least {num_options}")
    labels = list(classes)
    slugs = {label: _slug(label) for label in labels}
    if len(set(slugs.values())) != len(slugs):
        raise DatasetError(f"{folder}: two class folders map to the same name once made path-safe")
    rng = np.random.default_rng(seed)
    items = [(label, path) for label in labels for path in classes[label]]
    positions = balanced_positions(len(items), rng, num_options)
    records, images = [], {}
    for (label, path), pos in tqdm(list(zip(items, positions)), desc=f"reading {folder.name}", unit="img"):
        check_image(path, str(path))
        others = [labels[i] for i in rng.choice(len(labels), size=len(labels), replace=False) if labels[i] != label]
        options = others[: num_options - 1]
        options.insert(pos, label)
        rel = f"{slugs[label]}/{path.name}"
        images[rel] = path.read_bytes()
        records.append({"question": question, "options": options, "answer": pos,
                        "category": category or label, "id_": f"{slugs[label]}.{path.stem}",
                        "question_type": 1, "image_path": rel, "subject": label})
    card = (f"# {folder.name} (from a class-per-folder collection)\n\n"
            f"Made by `python -m textonly data from-folder {folder} --seed {seed}`: one Type 1 question per image, "
            f"{num_options} options (the true label and random other labels), answer positions balanced. "
            f"Source images are copied unchanged; they keep their own licence.\n\n"
            + counts_table(count_questions(records)))
    return write_dataset(out, records, card=card, images=images)


#: Environment variables that switch the hub off (those huggingface_hub reads, for every download).
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
HUB_KINDS = ("model", "dataset")


def _hub_endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT or constants._HF_DEFAULT_ENDPOINT).rstrip("/")


def hub_offline() -> bool:
    """True when the hub is switched off: one of :data:`OFFLINE_VARIABLES` is set now, or was when
    huggingface_hub was imported (what its own downloads obey)."""
    from huggingface_hub import is_offline_mode

    # a true value as huggingface_hub reads one
    return is_offline_mode() or any(os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")
                                    for name in OFFLINE_VARIABLES)


def check_hub(name: str, *, kind: str, timeout: float = 5.0, advice: str | None = None) -> None:
    """Fail within ``timeout`` s unless the hub answers for the model or dataset ``name``.

    The one reachability rule of the project, for models and datasets alike: nothing is
    checked when the hub is switched off (:func:`hub_offline`); the hub is asked at
    ``HF_ENDPOINT`` (else huggingface_hub's endpoint), with the user's token where there is
    one; no answer raises :class:`HubUnreachableError` (ending with ``advice``), an answer of
    401/403/404 a :class:`TextonlyError`; any other answer counts as reachable.
    """
    if kind not in HUB_KINDS:
        raise ValueError(f"kind {kind!r}: one of {HUB_KINDS}")
    if hub_offline():
        return
    from huggingface_hub import get_token

    endpoint = _hub_endpoint()
    token = get_token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"{endpoint}/api/{kind}s/{name}", method="HEAD", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403, 404):
            raise TextonlyError(f"the hub at {endpoint} answered {exc.code} for {kind} {name!r}: check the name, "
                                f"or log in (`hf auth login`) for a private or gated {kind}") from None
        return  # the hub answered: the download reports the rest
    except (urllib.error.URLError, OSError, ValueError) as exc:
        if advice is None:
            advice = ("this needs network access; without it, point `data check` at a local copy in the "
                      "study's layout (the data root is set by TEXTONLY_DATA_ROOT)")
        raise HubUnreachableError(f"cannot reach the Hugging Face hub at {endpoint} to fetch {kind} {name!r} "
                                  f"({getattr(exc, 'reason', exc)}): {advice}") from None


def from_hub(name: str, out: str | os.PathLike, *, split: str = "test", timeout: float = 5.0) -> Path:
    """Download a paper dataset from the hub and write it in the study's layout."""
    check_hub(name, kind="dataset", timeout=timeout)
    import datasets

    try:
        data = datasets.load_dataset(name, split=split)
    except Exception as exc:  # datasets raises many kinds; the user needs the one line
        raise HubUnreachableError(f"could not load {name!r} (split {split!r}) from the hub: {exc}") from None
    return hf_to_layout(data, out, source=name)


def _image_column(data) -> str:
    import datasets

    for column, feature in data.features.items():
        if isinstance(feature, datasets.Image):
            return column
    raise DatasetError(f"no image column among {list(data.features)}")


def _answer_index(answer, options: list[str], where: str) -> int:
    if isinstance(answer, bool):
        raise DatasetError(f"{where}: answer {answer!r} is not an option index")
    if isinstance(answer, int):
        return answer
    if isinstance(answer, str):
        text = answer.strip()
        if len(text) == 1 and text.upper() in "ABCDEFGH":
            return "ABCDEFGH".index(text.upper())
        if text.isdigit():
            return int(text)
        if text in options:
            return options.index(text)
    raise DatasetError(f"{where}: cannot read answer {answer!r} as an option index, letter or option text")


def hf_to_layout(data, out: str | os.PathLike, *, source: str = "hub") -> Path:
    """Write a ``datasets.Dataset`` of multiple-choice questions with images in the study's layout.

    Understands K-VISCUIT's fields and common variants (``choices``, ``option_a``..,
    letter or text answers, ``id``/``type``). Identical images are stored once, so that
    questions about one image stay clustered.
    """
    import datasets

    column = _image_column(data)
    data = data.cast_column(column, datasets.Image(decode=False))
    records, images = [], {}
    for i, row in enumerate(tqdm(data, desc=f"converting {source}", unit="q")):
        where = f"{source}, row {i}"
        if "options" in row or "choices" in row:
            options = list(row.get("options", row.get("choices")))
        else:
            keys = [k for k in ("option_a", "option_b", "option_c", "option_d", "A", "B", "C", "D") if k in row]
            options = [row[k] for k in keys]
        if not options:
            raise DatasetError(f"{where}: no options field among {list(row)}")
        if "question" not in row:
            raise DatasetError(f"{where}: no question field among {list(row)}")
        image = row[column]
        if not image or not image.get("bytes"):
            raise DatasetError(f"{where}: the image is missing")
        blob = image["bytes"]
        suffix = Path(image.get("path") or "").suffix.lower()
        if suffix not in IMAGE_SUFFIXES:
            suffix = ".png"
        rel = hashlib.sha256(blob).hexdigest()[:16] + suffix
        if rel not in images:
            check_image(io.BytesIO(blob), where, rel)
            images[rel] = blob
        record = {
            "question": row["question"],
            "options": [str(o) for o in options],
            "answer": _answer_index(row.get("answer"), [str(o) for o in options], where),
            "category": str(row.get("category") or source.split("/")[-1]),
            "id_": row.get("id_", row.get("id", i)),
            "question_type": int(row.get("question_type", row.get("type", 1)) or 1),
            "image_path": rel,
        }
        records.append(record)
    if not records:
        raise TextonlyError(f"{source}: no questions")
    card = f"# {source}\n\nConverted from the hub by `python -m textonly data from-hub {source}`.\n"
    return write_dataset(out, records, card=card, images=images)
