"""What a step left behind: the fingerprints of its outputs, whether they are still the ones
it recorded, and files written only when they change."""

from __future__ import annotations

import json
import os
from pathlib import Path

from textonly.core.fileio import write_bytes_atomic
from textonly.study.config import Study
from textonly.study.plan import STEP_FILE, Step


def step_outputs(study: Study, step: Step) -> dict | None:
    """The fingerprints recorded by what a step produced (None if any is missing): what
    downstream steps depend on, and what tells that nobody replaced them since."""

    def marker(path: Path) -> str | None:
        try:
            return json.loads(path.read_text())["fingerprint"]
        except (OSError, ValueError, KeyError):
            return None

    p = step.parameters
    if step.stage == "split":
        out = {"split": marker(step.dir / "data" / "split.json")}
    elif step.stage == "worlds":
        out = {w: marker(study.world_dir(w) / "world.json") for w in step.settings["worlds"]}
    elif step.stage == "base":
        out = {p["model"]: marker(Path(study.model_path(p["model"])) / "pretrain_config.json")}
    elif step.stage == "convert":
        out = {"convert": marker(step.dir / "data" / "convert.json")}
    elif step.stage == "train":
        out = {"run": marker(step.dir / "run.json")}
    elif step.stage == "evaluate":
        out = {"eval": marker(step.dir / "eval.json")}
    else:
        out = {}
    if not step.executed.is_file():
        return None
    return None if any(v is None for v in out.values()) else out


def recorded(study: Study, step: Step) -> dict | None:
    """The outputs a step recorded when it last finished, if they are still there unchanged."""
    try:
        record = json.loads((step.dir / STEP_FILE).read_text())
    except (OSError, ValueError):
        return None
    if record.get("status") != "done":
        return None
    outputs = step_outputs(study, step)
    return outputs if outputs is not None and outputs == record.get("outputs") else None


def up_to_date(study: Study, step: Step, key: str) -> bool:
    try:
        record = json.loads((step.dir / STEP_FILE).read_text())
    except (OSError, ValueError):
        return False
    return record.get("status") == "done" and record.get("fingerprint") == key and \
        recorded(study, step) is not None


def write_if_changed(path: Path, data: str | bytes) -> bool:
    """Write only when the content differs (so that unchanged files keep their times and
    the book's incremental build reads nothing again); True when written."""
    data = data.encode("utf-8") if isinstance(data, str) else data
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    write_bytes_atomic(path, data)
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)  # a temporary file's 0600 would keep a served book from reading it
    return True
