"""Text-only twins of image-text datasets: oracle qualities, skip on repeat, atomicity, clear
errors, a tiny captioner that describes each image once, and an OpenAI-compatible endpoint
(a local fake server) with retries, an on-disk cache keyed by what was asked, and the key kept off the
disk, off plain http to other machines and off redirects."""

import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import pytest
from conftest import good_record, make_dataset, write_image

from textonly.pipeline import convert as convert_module
from textonly.pipeline import describers
from textonly.pipeline.convert import MARKER, convert, dataset_prompt_key, load_prompts
from textonly.organism.worlds.text import QUALITIES
from textonly.pipeline.describers import check_base_url, is_embedded
from textonly.data.layout import load_dataset, write_dataset
from textonly.organism.tokenizer import train_tokenizer
from textonly.core.errors import TextonlyError
from textonly.core.fileio import read_jsonl
from textonly.models.hub import ARCHS, build_tiny
from textonly.organism.pretrain_samples import CAPTION_PROMPT


def _subset(worlds: Path, out: Path, n_images: int) -> Path:
    """The questions of the first ``n_images`` images of the wings test split, as a dataset of its own."""
    source = worlds / "wings" / "test"
    records = read_jsonl(source / "annotations.jsonl")
    names = list(dict.fromkeys(r["image_path"] for r in records))[:n_images]
    kept = [r for r in records if r["image_path"] in names]
    return write_dataset(out, kept, images={n: (source / "images" / n).read_bytes() for n in names})


@pytest.mark.parametrize("quality", ["full", "wrong"])
def test_oracle_twin_keeps_records_and_images_and_adds_the_description(worlds, tmp_path, quality):
    source = worlds / "wings" / "test"
    out = convert(source, "oracle", tmp_path / "twin", quality=quality, progress=False)
    before, after = load_dataset(source), load_dataset(out)
    assert [r["id_"] for r in after.records] == [r["id_"] for r in before.records]
    label = f"oracle-{quality}"
    for old, new in zip(before.records, after.records):
        assert new["descriptions"][label] == old["descriptions"][label]
        assert {k: v for k, v in new.items() if k != "descriptions"} == {k: v for k, v in old.items()
                                                                          if k != "descriptions"}
        assert after.image_file(new).stat().st_ino == before.image_file(old).stat().st_ino  # hard-linked
    marker = json.loads((out / MARKER).read_text())
    assert marker["description"] == label and marker["describer"] == "oracle" and marker["images"] == 200 and marker["questions"] == 400
    assert label in (out / "README.md").read_text()


def test_repeat_is_skipped_and_force_rebuilds(worlds, tmp_path, monkeypatch):
    out = convert(worlds / "wings" / "test", "oracle", tmp_path / "twin", progress=False)
    stamp = (out / "annotations.jsonl").stat().st_mtime_ns
    calls = []
    real = describers.Oracle.describe
    monkeypatch.setattr(describers.Oracle, "describe", lambda *a: calls.append(1) or real(*a))
    start = time.perf_counter()
    convert(worlds / "wings" / "test", "oracle", out, progress=False)
    assert time.perf_counter() - start < 5 and not calls
    assert (out / "annotations.jsonl").stat().st_mtime_ns == stamp
    convert(worlds / "wings" / "test", "oracle", out, force=True, progress=False)
    assert calls == [1]


def test_an_interrupted_write_leaves_nothing_that_looks_finished(worlds, tmp_path, monkeypatch):
    source = _subset(worlds, tmp_path / "source", 4)
    finished = convert(source, "oracle", tmp_path / "finished", progress=False)
    real, count = convert_module.link_or_copy, []

    def link_then_die(*args):
        count.append(1)
        if len(count) == 3:
            raise KeyboardInterrupt
        real(*args)

    monkeypatch.setattr(convert_module, "link_or_copy", link_then_die)
    with pytest.raises(KeyboardInterrupt):
        convert(source, "oracle", tmp_path / "fresh", progress=False)
    count.clear()
    with pytest.raises(KeyboardInterrupt):
        convert(source, "oracle", finished, quality="partial", progress=False)
    assert not (tmp_path / "fresh").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert json.loads((finished / MARKER).read_text())["description"] == "oracle-full"  # the old build, whole
    assert all("oracle-full" in r["descriptions"] for r in load_dataset(finished).records)


def test_oracle_needs_a_world_and_bad_input_is_refused(tmp_path):
    plain = make_dataset(tmp_path / "plain", [good_record(i) for i in range(3)])
    with pytest.raises(TextonlyError, match="needs a synthetic world dataset"):
        convert(plain, "oracle", tmp_path / "out", progress=False)
    with pytest.raises(TextonlyError, match="choose from full, partial, wrong, name_only"):
        convert(plain, "oracle", tmp_path / "out", quality="best", progress=False)
    with pytest.raises(TextonlyError, match="choose from oracle, captioner, openai"):
        convert(plain, "human", tmp_path / "out", progress=False)
    with pytest.raises(TextonlyError, match="must not be the source"):
        convert(plain, "oracle", plain, progress=False)
    assert not (tmp_path / "out").exists()
    assert QUALITIES == ("full", "partial", "wrong", "name_only")


def test_prompts_per_dataset_and_for_the_embedded_model(worlds, tmp_path):
    config = load_prompts()
    assert config["prompts"][config["embedded"]]["text"] == CAPTION_PROMPT  # what pretraining taught
    assert dataset_prompt_key(worlds / "wings" / "test", config) == "species"
    assert dataset_prompt_key(worlds / "heritage" / "train", config) == "culture"
    assert dataset_prompt_key(make_dataset(tmp_path / "k-viscuit", [good_record()]), config) == "culture"
    assert dataset_prompt_key(make_dataset(tmp_path / "x" / "y" / "z", [good_record()]), config) == config["default"]
    assert not is_embedded(SimpleNamespace(chat_template="{{ messages }}"))
    (tmp_path / "bad.yaml").write_text("prompts: {a: {text: ''}}\n")
    with pytest.raises(TextonlyError, match="non-empty 'text'"):
        load_prompts(tmp_path / "bad.yaml")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A randomly initialised tiny embedded VLM, saved as a checkpoint folder."""
    from textonly.organism import vlm

    corpus = ["Describe the image.", "A butterfly. The wings are orange. It has three spots."] * 20
    processor = vlm.make_processor(train_tokenizer(corpus, vocab_size=300))
    model = vlm.make_model("tiny", processor.tokenizer, seed=1)
    path = tmp_path_factory.mktemp("models") / "tiny-vlm"
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def test_captioner_describes_each_image_once(worlds, tmp_path, tiny_model, monkeypatch):
    from transformers import LlavaForConditionalGeneration

    source = _subset(worlds, tmp_path / "source", 4)
    seen = []
    real = LlavaForConditionalGeneration.generate

    def counting(self, *args, **kwargs):
        seen.append(kwargs["pixel_values"].shape[0])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LlavaForConditionalGeneration, "generate", counting)
    out = convert(source, "captioner", tmp_path / "twin", model=tiny_model, max_new_tokens=8, batch_size=3,
                  progress=False)
    assert seen == [3, 1]  # 4 images, each once, though 8 questions show them
    records = load_dataset(out).records
    texts = {r["image_path"]: r["descriptions"]["captioner-tiny-vlm"] for r in records}
    assert len(records) == 8 and len(texts) == 4 and all(isinstance(t, str) for t in texts.values())
    assert all(r["descriptions"]["captioner-tiny-vlm"] == texts[r["image_path"]] for r in records)
    marker = json.loads((out / MARKER).read_text())
    # a random model may emit only special tokens (the role markers are special): such
    # empty descriptions are counted, never hidden
    assert marker["empty_descriptions"] == sum(not t for t in texts.values())
    assert marker["prompt"] == {"key": "caption", "text": CAPTION_PROMPT}  # the embedded model's own prompt
    assert is_embedded(tiny_model) and not is_embedded(tmp_path)


@pytest.mark.parametrize("arch", ARCHS)
def test_captioner_of_a_hub_architecture_batches_like_one_by_one(tmp_path, arch):
    """Images of different sizes give different numbers of image tokens: a batch needs (left) padding."""
    folder = build_tiny(arch, tmp_path / f"tiny-{arch}")
    records = [good_record(i) for i in range(4)]
    source = make_dataset(tmp_path / "varied", records, images=False)
    for r, size in zip(records, [(64, 64), (96, 48), (40, 80), (120, 90)]):
        write_image(source / "images" / r["image_path"], size=size, colour=(60 * int(r["id_"][1:]), 90, 40))
    label = f"captioner-tiny-{arch}"
    texts = []
    for batch_size in (4, 1):
        out = convert(source, "captioner", tmp_path / f"twin{batch_size}", model=folder, max_new_tokens=6,
                      batch_size=batch_size, progress=False)
        texts.append([r["descriptions"][label] for r in load_dataset(out).records])
        assert json.loads((out / MARKER).read_text())["prompt"]["key"] == load_prompts()["default"]
    assert texts[0] == texts[1]


class FakeEndpoint(BaseHTTPRequestHandler):
    """Chat completions: the first ``failures`` requests get ``status``, the rest a description."""

    failures, status = 2, 429
    requests: ClassVar[list[dict]] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "auth": self.headers["Authorization"], "body": body})
        if len(self.requests) <= self.failures:
            self.send_response(self.status)
            self.end_headers()
            return
        answer = json.dumps({"choices": [{"message": {"role": "assistant",
                                                      "content": f" Description {len(self.requests)}. "}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(answer.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint(monkeypatch):
    FakeEndpoint.requests, FakeEndpoint.failures, FakeEndpoint.status = [], 2, 429
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeEndpoint)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    for proxy in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{server.server_port}/v1")
    yield FakeEndpoint
    server.shutdown()
    server.server_close()


def test_openai_retries_caches_and_never_writes_the_key(worlds, tmp_path, endpoint, monkeypatch):
    secret = "sk-test-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    source = _subset(worlds, tmp_path / "source", 3)
    cache = tmp_path / "cache"
    out = convert(source, "openai", tmp_path / "twin", cache=cache, backoff_s=0, progress=False)
    assert len(endpoint.requests) == 5  # 429, 429, then one answer per image
    first = endpoint.requests[-3]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == f"Bearer {secret}"
    assert first["body"]["model"] == "gpt-4o"
    text, image = first["body"]["messages"][0]["content"]
    assert text["text"] == load_prompts()["prompts"]["species"]["text"].strip()
    assert image["image_url"]["url"].startswith("data:image/png;base64,iVBOR")
    records = load_dataset(out).records
    assert {r["descriptions"]["openai-gpt-4o"] for r in records} == {"Description 3.", "Description 4.",
                                                                     "Description 5."}

    monkeypatch.delenv("OPENAI_API_KEY")  # every answer is cached: no request, so no key needed
    again = convert(source, "openai", tmp_path / "again", cache=cache, backoff_s=0, progress=False)
    assert len(endpoint.requests) == 5
    assert (again / "annotations.jsonl").read_text() == (out / "annotations.jsonl").read_text()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(list(cache.rglob("*.json"))) == 3
    assert not [p for p in files if secret.encode() in p.read_bytes()]


def test_openai_backs_off_then_gives_up_clearly(worlds, tmp_path, endpoint, monkeypatch):
    source = _subset(worlds, tmp_path / "source", 1)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(TextonlyError, match="OPENAI_API_KEY"):
        convert(source, "openai", tmp_path / "out", cache=tmp_path / "cache", progress=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    waits = []
    monkeypatch.setattr(describers.time, "sleep", waits.append)
    endpoint.failures, endpoint.status = 10, 503
    with pytest.raises(TextonlyError, match="no answer after 3 attempt.*HTTP 503"):
        convert(source, "openai", tmp_path / "out", cache=tmp_path / "cache", max_attempts=3, backoff_s=0.5,
                progress=False)
    assert len(endpoint.requests) == 3 and waits == [0.5, 1.0]
    endpoint.status = 400  # a bad request is not retried
    with pytest.raises(TextonlyError, match="HTTP 400"):
        convert(source, "openai", tmp_path / "out", cache=tmp_path / "cache", progress=False)
    assert len(endpoint.requests) == 4
    with socket.socket() as probe:  # a port where nothing listens: connection refused, retried
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    with pytest.raises(TextonlyError, match="no answer after 2 attempt.*refused"):
        convert(source, "openai", tmp_path / "out", cache=tmp_path / "cache", max_attempts=2, progress=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("url", ["https://api.openai.com/v1", "http://localhost:8000/v1/", "http://127.0.0.1:1/v1",
                                 "http://[::1]:8080/v1", "HTTP://LocalHost/v1"])
def test_base_url_https_or_this_machine_is_accepted(url):
    assert check_base_url(url) == url.rstrip("/")


@pytest.mark.parametrize("url", ["http://api.openai.com/v1", "http://127.0.0.1.example.com/v1", "http://[::2]/v1",
                                 "ftp://localhost/v1", "api.openai.com/v1", "http://[::1/v1", "https:///v1"])
def test_base_url_in_clear_to_another_machine_is_refused(tmp_path, monkeypatch, url):
    with pytest.raises(TextonlyError, match="must be an https URL") as refused:
        check_base_url(url)
    assert "\n" not in str(refused.value)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    source = make_dataset(tmp_path / "source", [good_record()])
    with pytest.raises(TextonlyError, match="must be an https URL"):  # before any request
        convert(source, "openai", tmp_path / "out", cache=tmp_path / "cache", max_attempts=1, progress=False)
    assert not (tmp_path / "cache").exists()


class Redirecting(BaseHTTPRequestHandler):
    """Answers the endpoint's address with a redirect to another host name; records every request."""

    status = 302
    seen: ClassVar[list[dict]] = []

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).seen.append({"method": self.command, "path": self.path, "auth": self.headers["Authorization"]})
        if self.path.startswith("/v1/"):
            self.send_response(self.status)
            self.send_header("Location", f"http://localhost:{self.server.server_port}/moved{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        answer = json.dumps({"choices": [{"message": {"content": "A description."}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST  # urllib follows 301/302/303 with a GET

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_openai_never_sends_the_key_on_a_redirect(tmp_path, monkeypatch, status):
    Redirecting.seen, Redirecting.status = [], status
    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    for proxy in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{server.server_port}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    source = make_dataset(tmp_path / "source", [good_record()])
    try:
        with pytest.raises(TextonlyError, match=rf"redirected \(HTTP {status}\) to http://localhost:\d+/moved"):
            convert(source, "openai", tmp_path / "out", cache=tmp_path / "cache", max_attempts=1, progress=False)
    finally:
        server.shutdown()
        server.server_close()
    assert Redirecting.seen == [{"method": "POST", "path": "/v1/chat/completions", "auth": "Bearer sk-secret"}]


def test_openai_cache_is_per_endpoint_and_max_tokens(tmp_path, endpoint, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    endpoint.failures = 0
    source = make_dataset(tmp_path / "source", [good_record()])
    runs = iter(range(10))

    def requests_after(**kwargs) -> list[int]:
        convert(source, "openai", tmp_path / f"twin{next(runs)}", cache=tmp_path / "cache", progress=False, **kwargs)
        return [r["body"]["max_tokens"] for r in endpoint.requests]

    assert requests_after() == [256]
    assert requests_after() == [256]  # the same question: answered from the cache
    assert requests_after(max_new_tokens=64) == [256, 64]
    assert requests_after(max_new_tokens=64) == [256, 64]
    monkeypatch.setenv("OPENAI_BASE_URL", os.environ["OPENAI_BASE_URL"].replace("127.0.0.1", "localhost"))
    assert requests_after() == [256, 64, 256]  # another endpoint: asked again
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 3

