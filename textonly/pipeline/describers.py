"""The describers: what writes a text in place of each image of a dataset (:data:`DESCRIBERS`).

* ``oracle`` (:class:`Oracle`): the synthetic worlds' own descriptions at a quality
  (:data:`~textonly.organism.worlds.text.QUALITIES`), label ``oracle-<quality>``;
* ``captioner`` (:class:`Captioner`): a VLM (a checkpoint folder, a hub id, or a loaded
  ``(model, processor)`` pair) with greedy generation, label ``captioner-<model folder name>``;
* ``openai`` (:class:`OpenAIDescriber`): an OpenAI-compatible chat-completions endpoint
  (GPT-4o in the paper), key from ``OPENAI_API_KEY`` only, answers cached on disk, label
  ``openai-<model>``.

Each has a ``label`` (the key of the descriptions it writes), ``settings`` (what identifies
its output, for build keys and dataset cards), a ``prompt`` (``None`` for the oracle; set
by :func:`textonly.pipeline.convert.convert` otherwise) and ``describe(images, bar)``.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from textonly.core.errors import TextonlyError
from textonly.core.fileio import dumps_json, write_text_atomic
from textonly.core.prompts import user_content
from textonly.core.provenance import model_identity
from textonly.data.images import load_image
from textonly.organism.worlds.text import QUALITIES, oracle_description

DESCRIBERS = ("oracle", "captioner", "openai")
OPENAI_BASE_URL = "https://api.openai.com/v1"
OPENAI_MODEL = "gpt-4o"
#: Hosts an endpoint may be reached on without TLS: this machine only, so the key never crosses a network in clear.
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass
class ImageItem:
    """One image of the dataset and the questions that show it."""

    name: str  # its image_path
    file: Path
    sha256: str
    records: list[dict] = field(default_factory=list)


def is_embedded(model) -> bool:
    """True for the project's embedded base VLMs (:mod:`textonly.organism.vlm`): a loaded processor or a
    checkpoint folder."""
    from textonly.organism.tokenizer import CHAT_TEMPLATE

    if isinstance(model, (str, os.PathLike)):
        # read from the file that save_pretrained writes, so that a skipped repeat loads nothing
        template = Path(model) / "chat_template.jinja"
        return template.is_file() and template.read_text(encoding="utf-8") == CHAT_TEMPLATE
    return getattr(model, "chat_template", None) == CHAT_TEMPLATE


class Oracle:
    """The synthetic worlds' ground-truth descriptions at one quality: a world's records carry
    them under the same name (``oracle-<quality>``) that the twin stores them under."""

    prompt = None  # the world wrote them; nobody is asked

    def __init__(self, quality: str):
        if quality not in QUALITIES:
            raise TextonlyError(f"oracle quality {quality!r}: choose from {', '.join(QUALITIES)}")
        self.quality = quality
        self.label = oracle_description(quality)
        self.settings = {"quality": quality}

    def check(self, root: Path, images: list[ImageItem]) -> None:
        """Refuse a dataset whose questions do not carry this quality's description."""
        lacking = [r["id_"] for item in images for r in item.records
                   if not isinstance((r.get("descriptions") or {}).get(self.label), str)]
        if lacking:
            raise TextonlyError(
                f"{root}: {len(lacking)} question(s) with an image have no {self.label!r} description "
                f"(first: {lacking[0]!r}); the oracle describer needs a synthetic world dataset "
                f"(`python -m textonly worlds build`), whose questions carry descriptions at the qualities "
                f"{', '.join(QUALITIES)}; use the captioner or openai describer for other datasets")

    def describe(self, images: list[ImageItem], bar) -> dict[str, str]:
        """The description of each image, by ``image_path``; ``bar`` advances once per image."""
        out = {}
        for item in images:
            # every question of an image carries the same world description
            out[item.name] = item.records[0]["descriptions"][self.label]
            bar.update()
        return out


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
        self.settings = {"model": self.name, "model_identity": model_identity(self.name),
                         "max_new_tokens": max_new_tokens}

    def describe(self, images: list[ImageItem], bar) -> dict[str, str]:
        """The description of each image, by ``image_path``, generated ``batch_size`` images at a time."""
        import torch

        from textonly.models.hub import load_model

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
                # item.file is already confined to the dataset's images/ (see convert._images)
                pictures = [load_image(item.file.parent, item.file.name) for item in batch]
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


def check_base_url(url: str) -> str:
    """``url`` without a trailing slash, if it is https, or http to this machine (:data:`LOCAL_HOSTS`)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
    except ValueError:  # e.g. an unclosed [ of an IPv6 address
        host = None
    if host and (parts.scheme == "https" or (parts.scheme == "http" and host in LOCAL_HOSTS)):
        return url.rstrip("/")
    raise TextonlyError(f"OPENAI_BASE_URL {url!r}: must be an https URL (plain http only to "
                        f"{', '.join(LOCAL_HOSTS)}), so that the API key is never sent in clear")


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Stop at a redirect: urllib would follow it with the request's headers, the key among them."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        fp.close()
        raise TextonlyError(f"{req.full_url}: redirected (HTTP {code}) to {newurl}, not followed so that the "
                            "API key is not sent there; set OPENAI_BASE_URL to the endpoint itself")


class OpenAIDescriber:
    """An OpenAI-compatible chat-completions endpoint; answers cached on disk by image, prompt, model,
    endpoint and ``max_tokens``.

    The key is read from ``OPENAI_API_KEY`` when a request is needed (never written
    anywhere) and sent to ``OPENAI_BASE_URL`` only: https (or http to this machine), no
    redirect followed. Plain ``urllib``, no client package.
    """

    def __init__(self, model: str, *, cache: Path, max_new_tokens: int, max_attempts: int, backoff_s: float,
                 timeout_s: float):
        if max_attempts < 1:
            raise TextonlyError(f"max_attempts {max_attempts}: at least 1")
        self.model, self.cache = model, cache
        self.base_url = check_base_url(os.environ.get("OPENAI_BASE_URL", OPENAI_BASE_URL))
        self.label = f"openai-{model}"
        self.prompt: str | None = None  # set by convert()
        self.max_new_tokens, self.max_attempts = max_new_tokens, max_attempts
        self.backoff_s, self.timeout_s = backoff_s, timeout_s
        self._opener = urllib.request.build_opener(_RefuseRedirects)
        self.settings = {"model": model, "base_url": self.base_url, "max_new_tokens": max_new_tokens}

    def cache_file(self, item: ImageItem) -> Path:
        """Where the answer for this image, prompt, model, endpoint and ``max_tokens`` is kept."""
        asked = [item.sha256, self.prompt, self.model, self.base_url, self.max_new_tokens]
        key = hashlib.sha256(json.dumps(asked).encode()).hexdigest()
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
                write_text_atomic(path, dumps_json({
                    "model": self.model, "prompt": self.prompt, "base_url": self.base_url,
                    "max_tokens": self.max_new_tokens, "image_sha256": item.sha256, "description": out[item.name]}))
            bar.update()
        return out

    def _request(self, item: ImageItem) -> str:
        from PIL import Image

        key = os.environ.get("OPENAI_API_KEY")
        if not key:
            raise TextonlyError("the openai describer needs the OPENAI_API_KEY environment variable")
        mime = Image.MIME.get(load_image(item.file.parent, item.file.name).format, "image/png")
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
                with self._opener.open(request, timeout=self.timeout_s) as response:
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


def make_describer(name: str, *, quality: str | None, model, cache: Path, max_new_tokens: int, batch_size: int,
                   max_attempts: int, backoff_s: float, timeout_s: float):
    """The describer ``name`` (one of :data:`DESCRIBERS`) with its settings; the others' are ignored.

    ``quality``: the oracle's (default ``full``); ``model``: the captioner's checkpoint, hub id
    or ``(model, processor)`` pair, or the openai model name (default :data:`OPENAI_MODEL`);
    ``cache``: the openai answers' folder.
    """
    if name not in DESCRIBERS:
        raise TextonlyError(f"describer {name!r}: choose from {', '.join(DESCRIBERS)}")
    if name == "oracle":
        return Oracle(quality or "full")
    if name == "captioner":
        return Captioner(model, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return OpenAIDescriber(model or OPENAI_MODEL, cache=cache, max_new_tokens=max_new_tokens,
                           max_attempts=max_attempts, backoff_s=backoff_s, timeout_s=timeout_s)
