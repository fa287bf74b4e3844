"""Files: atomic writes (an interrupted run never leaves a file or folder that looks
finished), JSON lines, and the fingerprints that let an identical build be skipped."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """``torch.save`` a training checkpoint atomically (a kill mid-write keeps the previous one)."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def dumps_jsonl(records: Iterable[dict]) -> str:
    """One JSON object per line, UTF-8 text, keys in insertion order (deterministic)."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The objects of a JSON-lines file written by this project (blank lines skipped)."""
    text = Path(path).read_text(encoding="utf-8")
    # split on "\n" only: str.splitlines() also splits on U+2028 etc., which JSON strings may hold raw
    return [json.loads(line) for line in text.split("\n") if line.strip()]


def build_key(settings: dict, *parts: bytes | str) -> str:
    """A short hash of build settings and of everything else the build depends on (code, inputs)."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
    return digest.hexdigest()[:16]


def module_sources(*modules) -> list[bytes]:
    """The source bytes of ``modules`` (every ``.py`` file of a package), for build keys: a change of
    the code that makes a result changes the key, so the result is rebuilt."""
    import inspect

    parts = []
    for module in modules:
        source = Path(inspect.getfile(module))
        files = sorted(source.parent.rglob("*.py")) if source.name == "__init__.py" else [source]
        parts += [f.read_bytes() for f in files]
    return parts


def finished_build(marker: str | os.PathLike, key: str) -> bool:
    """True when ``marker`` (a JSON file written last by a build) records the fingerprint ``key``."""
    try:
        return json.loads(Path(marker).read_text())["fingerprint"] == key
    except (OSError, ValueError, KeyError, TypeError):
        return False


def read_yaml(path: str | os.PathLike):
    """A YAML file's content; an unreadable or malformed file is a one-line :class:`TextonlyError`."""
    import yaml

    from textonly.core.errors import TextonlyError

    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise TextonlyError(f"{path}: cannot be read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise TextonlyError(f"{path}: not valid YAML ({exc})") from None


def dumps_json(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=2) + "\n"


@contextmanager
def atomic_directory(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; on success it replaces ``final`` in one rename.

    On any error (or a kill) the temporary folder is all that is left: its name starts
    with a dot and ends in ``.partial``, so nothing reads it as a finished dataset.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def link_or_copy(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source`` (no copy of the bytes), else a copy."""
    import shutil

    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, or no hard links there
        shutil.copy2(source, target)
