"""Convert an image-text dataset into its text-only twin: a description of each image.

``convert(data, describer, out)`` writes ``out`` in the layout of :mod:`textonly.data`:
the same records under the same ids, each question with an image gaining
``descriptions[<label>]`` (what ``text_only`` training puts in place of the image), the
same images (hard-linked where possible, else copied) so the twin can still be evaluated
with them, a dataset card ``README.md`` and ``convert.json`` (the build's fingerprint and
settings, written last). A repeat with the same inputs is skipped. Each image is described
once, however many questions show it. Describers (:data:`DESCRIBERS`):

* ``oracle``: the synthetic worlds' own descriptions at a quality level (:data:`LEVELS`),
  label ``oracle-<level>``;
* ``captioner``: a VLM (a checkpoint folder, a hub id, or a loaded ``(model,
  processor)`` pair) with greedy generation, label ``captioner-<model folder name>``;
* ``openai``: an OpenAI-compatible chat-completions endpoint (GPT-4o in the paper), key
  from ``OPENAI_API_KEY`` only, answers cached on disk, label ``openai-<model>``.

The prompts live in ``describe_prompts.yaml`` beside this module.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import shutil
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from textonly import __version__
from textonly.data import ANNOTATIONS, IMAGES, count_questions, counts_table, load_dataset, safe_image_file
from textonly.errors import TextonlyError
from textonly.fileio import (atomic_directory, build_key, dumps_json, dumps_jsonl, finished_build, read_yaml,
                             write_text_atomic)
from textonly.prompts import user_content
from textonly.worlds.text import QUALITIES

DESCRIBERS = ("oracle", "captioner", "openai")
LEVELS = QUALITIES
PROMPTS_FILE = Path(__file__).with_name("describe_prompts.yaml")
MARKER = "convert.json"
OPENAI_BASE_URL = "https://api.openai.com/v1"
OPENAI_MODEL = "gpt-4o"


@dataclass
class ImageItem:
    """One image of the dataset and the questions that show it."""

    name: str  # its image_path
    file: Path
    sha256: str
    records: list[dict] = field(default_factory=list)


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


def is_embedded(model) -> bool:
    """True for the project's embedded base VLMs (:mod:`textonly.vlm`): a loaded processor or a checkpoint folder."""
    from textonly.tokenizer import CHAT_TEMPLATE

    if isinstance(model, (str, os.PathLike)):
        # read from the file that save_pretrained writes, so that a skipped repeat loads nothing
        template = Path(model) / "chat_template.jinja"
        return template.is_file() and template.read_text(encoding="utf-8") == CHAT_TEMPLATE
    return getattr(model, "chat_template", None) == CHAT_TEMPLATE


# --- describers ------------------------------------------------------------------------

class Oracle:
    """The synthetic worlds' ground-truth descriptions at one quality level."""

    prompt = None  # the world wrote them; nobody is asked

    def __init__(self, level: str):
        if level not in LEVELS:
            raise TextonlyError(f"oracle level {level!r}: choose from {', '.join(LEVELS)}")
        self.level = level
        self.label = f"oracle-{level}"
        self.settings = {"level": level}

    def check(self, root: Path, images: list[ImageItem]) -> None:
        """Refuse a dataset whose questions do not carry this level's description."""
        lacking = [r["id_"] for item in images for r in item.records
                   if not isinstance((r.get("descriptions") or {}).get(self.level), str)]
        if lacking:
            raise TextonlyError(
                f"{root}: {len(lacking)} question(s) with an image have no {self.level!r} description "
                f"(first: {lacking[0]!r}); the oracle describer needs a synthetic world dataset "
                f"(`python -m textonly worlds build`), whose questions carry descriptions at the levels "
                f"{', '.join(LEVELS)}; use the captioner or openai describer for other datasets")

    def describe(self, images: list[ImageItem], bar) -> dict[str, str]:
        """The description of each image, by ``image_path``; ``bar`` advances once per image."""
        out = {}
        for item in images:
            # every question of an image carries the same world description
            out[item.name] = item.records[0]["descriptions"][self.level]
            bar.update()
        return out


def _model_signature(name: str) -> dict:
    """What identifies a checkpoint cheaply: its name, and for a local folder its files' sizes and times."""
    folder = Path(name)
    files = (sorted(folder.glob("*.safetensors")) + [folder / "config.json"]) if folder.is_dir() else []
    return {"model": name, "files": {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.is_file()}}


class Captioner:
    """A VLM that describes each image, greedily, in batches; a path or hub id is loaded when first needed."""

    def __init__(self, model, *, max_new_tokens: int, batch_size: int):
        if model is None:
            raise TextonlyError("the captioner describer needs a model (a checkpoint folder or hub id)")
        if isinstance(model, (str, os.PathLike)):
            self.name, self.model, self.processor = str(model), None, None
        elif isinstance(model, tuple) and len(model) == 2:
            self.model, self.processor = model
            self.name = str(self.model.name_or_path or "model")
        else:
            raise TextonlyError(f"captioner model: give a path, a hub id or a (model, processor) pair, "
                                f"not {type(model).__name__}")
        self.label = f"captioner-{Path(self.name).name}"
        self.embedded = is_embedded(self.processor if self.processor is not None else self.name)
        self.prompt: str | None = None  # set by convert(): the embedded prompt or the dataset's
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.settings = {**_model_signature(self.name), "max_new_tokens": max_new_tokens}

    def describe(self, images: list[ImageItem], bar) -> dict[str, str]:
        """The description of each image, by ``image_path``, generated ``batch_size`` images at a time."""
        import torch
        from PIL import Image

        from textonly.hub import load_model

        if self.model is None:
            self.model, self.processor = load_model(self.name, device="cuda" if torch.cuda.is_available() else None)
        model, processor = self.model, self.processor
        model.eval()
        device = next(model.parameters()).device
        text = processor.apply_chat_template([{"role": "user", "content": user_content(self.prompt, image=True)}],
                                             add_generation_prompt=True)
        tokenizer = processor.tokenizer
        side, tokenizer.padding_side = tokenizer.padding_side, "left"  # generation continues from the right end
        out = {}
        try:
            for start in range(0, len(images), self.batch_size):
                batch = images[start:start + self.batch_size]
                pictures = []
                for item in batch:
                    with Image.open(item.file) as image:
                        pictures.append(image.convert("RGB"))
                inputs = processor(text=[text] * len(batch), images=pictures, return_tensors="pt", padding=True)
                inputs = {k: v.to(device, model.dtype) if v.is_floating_point() else v.to(device)
                          for k, v in inputs.items()}
                with torch.no_grad():
                    generated = model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
                new = generated[:, inputs["input_ids"].shape[1]:]
                for item, ids in zip(batch, new):
                    out[item.name] = tokenizer.decode(ids, skip_special_tokens=True).strip()
                bar.update(len(batch))
        finally:
            tokenizer.padding_side = side
        return out


class OpenAIDescriber:
    """An OpenAI-compatible chat-completions endpoint; answers cached on disk by image, prompt and model.

    The key is read from ``OPENAI_API_KEY`` when a request is needed (never written
    anywhere); the base URL from ``OPENAI_BASE_URL``. Plain ``urllib``, no client package.
    """

    def __init__(self, model: str, *, cache: Path, max_new_tokens: int, max_attempts: int, backoff_s: float,
                 timeout_s: float):
        if max_attempts < 1:
            raise TextonlyError(f"max_attempts {max_attempts}: at least 1")
        self.model, self.cache = model, cache
        self.base_url = os.environ.get("OPENAI_BASE_URL", OPENAI_BASE_URL).rstrip("/")
        self.label = f"openai-{model}"
        self.prompt: str | None = None  # set by convert()
        self.max_new_tokens, self.max_attempts = max_new_tokens, max_attempts
        self.backoff_s, self.timeout_s = backoff_s, timeout_s
        self.settings = {"model": model, "base_url": self.base_url, "max_new_tokens": max_new_tokens}

    def cache_file(self, item: ImageItem) -> Path:
        """Where the answer for this image, prompt and model is kept."""
        key = hashlib.sha256(json.dumps([item.sha256, self.prompt, self.model]).encode()).hexdigest()
        return self.cache / key[:2] / f"{key}.json"

    def describe(self, images: list[ImageItem], bar) -> dict[str, str]:
        """The description of each image, by ``image_path``: from the cache, else asked (and then cached)."""
        out = {}
        for item in images:
            path = self.cache_file(item)
            if path.is_file():
                out[item.name] = json.loads(path.read_text(encoding="utf-8"))["description"]
            else:
                out[item.name] = self._request(item)
                write_text_atomic(path, dumps_json({"model": self.model, "prompt": self.prompt,
                                                    "image_sha256": item.sha256, "description": out[item.name]}))
            bar.update()
        return out

    def _request(self, item: ImageItem) -> str:
        from PIL import Image

        key = os.environ.get("OPENAI_API_KEY")
        if not key:
            raise TextonlyError("the openai describer needs the OPENAI_API_KEY environment variable")
        with Image.open(item.file) as image:
            mime = Image.MIME.get(image.format, "image/png")
        url = f"data:{mime};base64," + base64.b64encode(item.file.read_bytes()).decode("ascii")
        payload = {"model": self.model, "temperature": 0, "max_tokens": self.max_new_tokens,
                   "messages": [{"role": "user", "content": [{"type": "text", "text": self.prompt},
                                                             {"type": "image_url", "image_url": {"url": url}}]}]}
        answer = self._post(json.dumps(payload).encode(), key)
        try:
            text = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise TextonlyError(f"{self.base_url}: unexpected answer for image {item.name}: "
                                f"{str(answer)[:300]}") from None
        if not isinstance(text, str) or not text.strip():
            refusal = answer["choices"][0]["message"].get("refusal") or "empty content"
            raise TextonlyError(f"{self.base_url}: no description of image {item.name} ({refusal})")
        return text.strip()

    def _post(self, data: bytes, key: str) -> dict:
        """POST with retries: 429, 5xx and connection errors are retried with exponential backoff."""
        endpoint = f"{self.base_url}/chat/completions"
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        for attempt in range(1, self.max_attempts + 1):
            wait = self.backoff_s * 2 ** (attempt - 1)
            try:
                request = urllib.request.Request(endpoint, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    body = response.read()
                try:
                    return json.loads(body)
                except ValueError:
                    raise TextonlyError(f"{endpoint}: the answer is not JSON: {body[:200]!r}") from None
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:300].decode("utf-8", "replace")
                if exc.code != 429 and exc.code < 500:
                    raise TextonlyError(f"{endpoint}: HTTP {exc.code} {exc.reason}: {detail}") from None
                problem = f"HTTP {exc.code} {exc.reason}"
                retry_after = exc.headers.get("Retry-After", "")
                if retry_after.isdigit():  # the server knows best, within reason
                    wait = max(wait, min(float(retry_after), 60.0))
            except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, cut short
                problem = str(getattr(exc, "reason", exc)) or type(exc).__name__
            if attempt < self.max_attempts:
                time.sleep(wait)
        raise TextonlyError(f"{endpoint}: no answer after {self.max_attempts} attempt(s) (last: {problem})")


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


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, or no hard links there
        shutil.copy2(source, target)


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
        lines += ["", f"Prompt (`{prompt['key']}`, from `textonly/{PROMPTS_FILE.name}`):", "",
                  "> " + prompt["text"]]
    without = len(records) - with_image
    if without:
        lines += ["", (f"{without} question(s) have no description: no image (`image_path` null), or an "
                       "image missing from the source (dropped on loading, as there).")]
    lines += ["", counts_table(count_questions(records))]
    example = images[0]
    lines += ["## Example", "", f"Image `{example.name}`, described as:", "", "> " + descriptions[example.name], ""]
    return "\n".join(lines)


def convert(data: str | os.PathLike, describer: str, out: str | os.PathLike, *, level: str | None = None,
            model=None, prompt: str | None = None, prompts_file: str | os.PathLike | None = None,
            cache: str | os.PathLike | None = None, max_new_tokens: int = 256, batch_size: int = 16,
            max_attempts: int = 6, backoff_s: float = 1.0, timeout_s: float = 120.0, force: bool = False,
            progress: bool = True) -> Path:
    """Write the text-only twin of the dataset ``data`` into ``out``; returns ``out``.

    ``describer``: one of :data:`DESCRIBERS`. ``level``: the oracle's quality level
    (default ``full``). ``model``: the captioner's checkpoint folder, hub id or loaded
    ``(model, processor)`` pair; the openai model name (default ``gpt-4o``). ``prompt``: a
    key of the prompt file (default: the embedded prompt for the project's own VLMs, else
    the one whose ``match`` fits the dataset's name or card, else the file's default).
    ``cache``: the openai answers' folder (default ``<out's parent>/description-cache``).
    ``max_new_tokens`` bounds a description; ``batch_size`` is the captioner's;
    ``max_attempts``, ``backoff_s`` (first wait, doubled each retry) and ``timeout_s`` are
    the endpoint's. The same inputs already converted in ``out`` are skipped unless
    ``force``.
    """
    source, out = Path(data), Path(out)
    if describer not in DESCRIBERS:
        raise TextonlyError(f"describer {describer!r}: choose from {', '.join(DESCRIBERS)}")
    if out.resolve() == source.resolve():
        raise TextonlyError(f"{out}: the output must not be the source dataset")
    if describer != "oracle" and level is not None:
        raise TextonlyError("a quality level is for the oracle describer only")
    if describer == "oracle" and (model is not None or prompt is not None):
        raise TextonlyError("the oracle describer takes no model and no prompt (it reads the world's descriptions)")
    if max_new_tokens < 1 or batch_size < 1:
        raise TextonlyError("max_new_tokens and batch_size must be at least 1")
    load_dataset(source)  # every problem of the source reported before any work
    records = _raw_records(source)
    images = _images(source, records)
    if not images:
        raise TextonlyError(f"{source}: no question with an image; nothing to describe")

    if describer == "oracle":
        worker = Oracle(level or "full")
        worker.check(source, images)
    elif describer == "captioner":
        worker = Captioner(model, max_new_tokens=max_new_tokens, batch_size=batch_size)
    else:
        worker = OpenAIDescriber(model or OPENAI_MODEL, max_new_tokens=max_new_tokens, max_attempts=max_attempts,
                                 backoff_s=backoff_s, timeout_s=timeout_s,
                                 cache=Path(cache) if cache is not None else out.resolve().parent / "description-cache")
    chosen = None
    if describer != "oracle":
        config = load_prompts(prompts_file)
        if prompt is not None and prompt not in config["prompts"]:
            raise TextonlyError(f"prompt {prompt!r}: choose from {', '.join(config['prompts'])}")
        if prompt is None:
            # the embedded VLMs caption only when asked as in their pretraining
            embedded = describer == "captioner" and worker.embedded
            prompt = config["embedded"] if embedded else dataset_prompt_key(source, config)
        chosen = {"key": prompt, "text": config["prompts"][prompt]["text"].strip()}
        worker.prompt = chosen["text"]

    settings = {"describer": worker.label, "settings": worker.settings, "prompt": chosen}
    key = build_key(settings, (source / ANNOTATIONS).read_bytes(), *(item.sha256 for item in images),
                    Path(__file__).read_bytes())
    if not force and finished_build(out / MARKER, key):
        return out

    with tqdm(total=len(images), desc=f"describing ({worker.label})", unit="img", disable=not progress) as bar:
        descriptions = worker.describe(images, bar)
    empty = sorted(name for name, text in descriptions.items() if not text)
    if empty:
        warnings.warn(f"{worker.label}: {len(empty)} empty description(s), e.g. of image {empty[0]}", stacklevel=2)
    converted = []
    for record in records:
        text = descriptions.get(record["image_path"]) if record["image_path"] is not None else None
        if text is not None:
            record = {**record, "descriptions": {**(record.get("descriptions") or {}), worker.label: text}}
        converted.append(record)

    with atomic_directory(out) as tmp:
        (tmp / IMAGES).mkdir()
        for item in images:
            _link(item.file, tmp / IMAGES / item.name)
        write_text_atomic(tmp / ANNOTATIONS, dumps_jsonl(converted))
        write_text_atomic(tmp / "README.md", _card(source, out, worker, chosen, converted, images, descriptions))
        # the marker last: with the right fingerprint it says the build is complete
        write_text_atomic(tmp / MARKER, dumps_json({
            **settings, "fingerprint": key, "source": str(source), "questions": len(converted),
            "images": len(images), "empty_descriptions": len(empty), "textonly_version": __version__}))
    return out
