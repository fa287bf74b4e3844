"""Running one step (what a workflow job does) and what it leaves behind: the fingerprints of
its outputs in ``step.json`` (the job's output, written last), whether they are still the ones it
recorded, a ``failed.json`` naming the error when it fails, and files written only when they change."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from textonly.core.errors import TextonlyError
from textonly.core.fileio import dumps_json, write_bytes_atomic, write_text_atomic
from textonly.study.config import Study
from textonly.study.notebook import execute, failure_message, package_fingerprint
from textonly.study.plan import STEP_FILE, Step

#: What a failed step leaves in its run directory: its one-line error (the workflow removes the
#: failed job's ``step.json``).
FAILED_FILE = "failed.json"

#: The outputs a step made and how long that took (kept across executions that found them made).
MADE_FILE = "made.json"


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


def run_step(study: Study, run_id: str, execute=execute) -> dict:
    """Execute one step (``execute(study, step)``: its notebook, by papermill) and record what it
    made in ``step.json``; on failure write ``failed.json`` and raise :class:`TextonlyError`
    with one line naming the notebook, the cell and the error."""
    if run_id not in study.steps:
        raise TextonlyError(f"{run_id!r} is not a step of study {study.name!r}, profile {study.profile!r}")
    step = study.steps[run_id]
    step.dir.mkdir(parents=True, exist_ok=True)
    (step.dir / FAILED_FILE).unlink(missing_ok=True)
    began = time.perf_counter()
    try:
        execute(study, step)
        outputs = step_outputs(study, step)
        if outputs is None:
            raise TextonlyError("the notebook finished but left no finished result in its run directory")
    except Exception as exc:  # noqa: BLE001 - reported by name; the workflow goes on with the others
        message = failure_message(step, exc)
        write_text_atomic(step.dir / FAILED_FILE, dumps_json({"run_id": run_id, "error": message}))
        raise TextonlyError(message) from exc
    seconds = round(time.perf_counter() - began, 2)
    # the time it took to make these outputs: a re-execution that found them made (the function
    # skipped its work) keeps the time of the execution that made them
    try:
        made = json.loads((step.dir / MADE_FILE).read_text())
    except (OSError, ValueError):
        made = {}
    if made.get("outputs") != outputs:
        made = {"outputs": outputs, "seconds": seconds}
        write_text_atomic(step.dir / MADE_FILE, dumps_json(made))
    record = {"run_id": run_id, "status": "done", "outputs": outputs, "notebook": f"notebooks/{step.notebook}",
              "parameters": step.parameters, "seconds": seconds, "made_seconds": made["seconds"],
              "package": package_fingerprint()}
    write_text_atomic(step.dir / STEP_FILE, dumps_json(record))
    return record
