import json
import os
from pathlib import Path

import pytest
from PIL import Image

from textonly.core.config import data_root

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("CODECARBON_LOG_LEVEL", "error")


@pytest.fixture(scope="session")
def worlds(tmp_path_factory) -> Path:
    """Both worlds at the default settings, built once for the session."""
    from textonly.organism.worlds.build import build_world

    out = tmp_path_factory.mktemp("worlds")
    for name in ("wings", "heritage"):
        build_world(name, out, seed=0)
    return out


def write_image(path: Path, size=(8, 8), colour=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def good_record(i: int = 0, **changes) -> dict:
    record = {"question": f"Which one is shown ({i})?", "options": ["a", "b", "c", "d"], "answer": i % 4,
              "category": "Food", "id_": f"q{i}", "question_type": 1, "image_path": f"{i}.png"}
    record.update(changes)
    return record


def make_dataset(root: Path, records: list, *, images: bool = True) -> Path:
    """A dataset folder with the given records (dicts, or raw lines as str/bytes)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for r in records:
        if isinstance(r, dict):
            lines.append(json.dumps(r).encode())
            if images and r.get("image_path") and "/" not in r["image_path"] and not r["image_path"].startswith("."):
                write_image(root / "images" / r["image_path"])
        else:
            lines.append(r if isinstance(r, bytes) else r.encode())
    (root / "annotations.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return root


def shared_dataset(name: str) -> Path:
    path = data_root() / name
    if not path.is_dir():
        pytest.skip(f"real dataset {name!r} not found under the data root {data_root()} "
                    "(set TEXTONLY_DATA_ROOT to the folder that holds it)")
    return path


@pytest.fixture(scope="session")
def smoke_book(worlds, tmp_path_factory):
    """The main study's `smoke` profile run end to end in a scratch root (the session's worlds
    linked in), then the book built from its results, offline, with warnings as errors."""
    import shutil
    import subprocess
    import sys
    import time
    from types import SimpleNamespace

    from textonly.core.config import PROJECT_ROOT
    from textonly.study.engine import run_study

    root = tmp_path_factory.mktemp("smoke-book")
    (root / "data").mkdir()
    (root / "data" / "worlds").symlink_to(worlds)
    started = time.perf_counter()
    report = run_study(PROJECT_ROOT / "studies" / "main.yaml", "smoke", root=root)
    study_seconds = time.perf_counter() - started
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(PROJECT_ROOT / name, root / name)
    shutil.copytree(PROJECT_ROOT / "book", root / "book")
    shutil.copytree(PROJECT_ROOT / "workflow", root / "workflow")  # the cluster page includes its profile
    command = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(root), "--warningiserror", "--quiet"]
    started = time.perf_counter()
    build = subprocess.run(command, capture_output=True, text=True)
    return SimpleNamespace(root=root, report=report, study_seconds=study_seconds, build=build, command=command,
                           build_seconds=time.perf_counter() - started, html=root / "_build" / "html")
