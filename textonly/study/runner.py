"""Running a study profile: each step not up to date executed by papermill, in order, then
the tables and the pages (see :mod:`textonly.study.config` for the steps)."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from textonly import __version__
from textonly.core.errors import TextonlyError
from textonly.core.fileio import build_key, dumps_json, write_text_atomic
from textonly.study.collect import collect, publish, tables_fingerprint
from textonly.study.config import Study, load_study
from textonly.study.plan import STEP_FILE, Step
from textonly.study.steps import recorded, step_outputs, up_to_date, write_if_changed


def package_fingerprint() -> str:
    """The package's version and a hash of its source (any code change re-runs the notebooks;
    the functions they call skip their own work when their inputs are unchanged)."""
    digest = hashlib.sha256(__version__.encode())
    package = Path(__file__).parent.parent
    for path in sorted([*package.rglob("*.py"), *package.rglob("*.yaml")]):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:12]}"


def notebook_fingerprint(path: Path) -> str:
    """A hash of a notebook's cells (type and source), not its metadata or any outputs."""
    return _notebook_key(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _notebook_key(path: str, mtime_ns: int) -> str:
    cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    return build_key({"cells": [[c["cell_type"], "".join(c["source"])] for c in cells]})


def step_fingerprint(study: Study, step: Step, upstream: dict[str, dict], package: str,
                     extra: str = "") -> str:
    """Hash of what determines a step's result: its settings, its notebook's code, the
    package, and the outputs of the steps it reads (``extra``: the tables a page reads)."""
    inputs = [json.dumps(upstream[n], sort_keys=True) for n in step.needs]
    return build_key({"stage": step.stage, "settings": step.settings}, package,
                     notebook_fingerprint(study.notebooks / step.notebook), *inputs, extra)


def _kernel_manager(log_path: Path):
    """A kernel manager whose kernel writes its own stderr (not the notebook's) to a log file,
    runs in this Python, and leaves the matplotlib backend to the kernel (inline figures)."""
    from jupyter_client.manager import AsyncKernelManager

    class Manager(AsyncKernelManager):
        def format_kernel_cmd(self, extra_arguments=None):
            # the kernel named python3 runs in this interpreter (the project's .venv), even
            # where a user-level python3 kernelspec points at another Python
            cmd = super().format_kernel_cmd(extra_arguments)
            if cmd[1:3] == ["-m", "ipykernel_launcher"]:
                cmd[0] = sys.executable
            return cmd

        async def start_kernel(self, **kw):
            env = {k: v for k, v in (kw.pop("env", None) or os.environ).items() if k != "MPLBACKEND"}
            with open(log_path, "ab") as log:
                return await super().start_kernel(env=env, stderr=log, **kw)

    return Manager


def execute(study: Study, step: Step) -> None:
    """Execute a step's notebook with papermill into its run directory (raises on failure)."""
    import papermill

    step.dir.mkdir(parents=True, exist_ok=True)
    parameters = {"config": str(study.config_path), "profile": study.profile, "root": str(study.root),
                  "run_id": step.run_id, **step.parameters}
    papermill.execute_notebook(
        str(study.notebooks / step.notebook), str(step.executed), parameters=parameters, kernel_name="python3",
        progress_bar=False, cwd=str(step.dir), kernel_manager_class=_kernel_manager(step.dir / "kernel.log"))


def _failure(step: Step, exc: BaseException) -> str:
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        what = f"{exc.ename}: {exc.evalue}".strip()
        cell = f", cell [{exc.exec_count}]"
    else:
        what, cell = f"{type(exc).__name__}: {exc}".strip(), ""
    return f"notebooks/{step.notebook} failed ({step.run_id}{cell}): {what}; see {step.executed}"


@dataclass
class Report:
    """What a study run did: run ids per outcome, failure messages, and the results folder."""

    executed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    blocked: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    results: Path | None = None
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked

    def summary(self) -> str:
        parts = [f"{len(self.skipped)} up to date",
                 f"{len(self.executed)} {'to execute' if self.dry_run else 'executed'}"]
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        if self.blocked:
            parts.append(f"{len(self.blocked)} not run (an input failed)")
        return ", ".join(parts) + f" in {self.seconds:.1f} s"


class _Attempts:
    """Runs the steps of one study run in order, recording each outcome in the report: a step
    whose inputs failed is blocked, an up-to-date one skipped, the others executed."""

    def __init__(self, study: Study, report: Report, package: str, *, force: bool, bar):
        self.study, self.report, self.package, self.force, self.bar = study, report, package, force, bar
        self.upstream: dict[str, dict] = {}

    def missing_inputs(self, step: Step) -> list[str]:
        """The steps this one needs whose outputs are not available; a step outside this run
        (``only``) lends the outputs it recorded last time, if they are still there."""
        missing = []
        for n in step.needs:
            if n in self.upstream:
                continue
            previous = None
            if n not in self.report.failed and n not in self.report.blocked:
                previous = recorded(self.study, self.study.steps[n])
            if previous is None:
                missing.append(n)
            else:
                self.upstream[n] = previous
        return missing

    def attempt(self, step: Step, extra: str = "") -> None:
        self.bar.set_postfix_str(step.run_id, refresh=True)
        try:
            self._attempt(step, extra)
        finally:
            self.bar.update()

    def _attempt(self, step: Step, extra: str) -> None:
        missing = self.missing_inputs(step)
        if missing:
            self.report.blocked[step.run_id] = f"needs {', '.join(missing)}"
            return
        key = step_fingerprint(self.study, step, self.upstream, self.package, extra)
        if not self.force and up_to_date(self.study, step, key):
            self.upstream[step.run_id] = step_outputs(self.study, step) or {}
            self.report.skipped.append(step.run_id)
        elif self.report.dry_run:  # what depends on it would run too
            self.upstream[step.run_id] = {"dry_run": step.run_id}
            self.report.executed.append(step.run_id)
        else:
            self._execute(step, key)

    def _execute(self, step: Step, key: str) -> None:
        try:
            previous = json.loads((step.dir / STEP_FILE).read_text())
        except (OSError, ValueError):
            previous = {}
        began = time.perf_counter()
        try:
            execute(self.study, step)
            outputs = step_outputs(self.study, step)
            if outputs is None:
                raise TextonlyError("the notebook finished but left no finished result in its run directory")
        except Exception as exc:  # noqa: BLE001 - reported by name, the other steps go on
            message = _failure(step, exc)
            self.report.failed[step.run_id] = message
            write_text_atomic(step.dir / STEP_FILE, dumps_json(
                {"run_id": step.run_id, "status": "failed", "fingerprint": key, "error": message}))
            self.bar.write(f"FAILED {message}")
            return
        self.upstream[step.run_id] = outputs
        seconds = round(time.perf_counter() - began, 2)
        # the time it took to make these outputs: a re-execution that found them made (the
        # function skipped its work) keeps the time of the execution that made them
        made = previous.get("made_seconds", previous.get("seconds")) if previous.get("outputs") == outputs else None
        write_text_atomic(step.dir / STEP_FILE, dumps_json({
            "run_id": step.run_id, "status": "done", "fingerprint": key, "outputs": outputs,
            "notebook": f"notebooks/{step.notebook}", "parameters": step.parameters,
            "seconds": seconds, "made_seconds": made if made is not None else seconds, "package": self.package}))
        self.report.executed.append(step.run_id)


def run_study(config: str | os.PathLike, profile: str = "default", *, root: str | os.PathLike | None = None,
              only: str | None = None, force: bool = False, dry_run: bool = False,
              progress: bool = True) -> Report:
    """Run a study profile: every step not up to date, then the tables, the pages and ``results/``.

    ``only``: run just the steps whose run id contains this text (and nothing after them);
    ``force``: execute even up-to-date steps; ``dry_run``: report what would run.
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    study = load_study(config, profile, root=root)
    package = package_fingerprint()
    report = Report(dry_run=dry_run)
    write_if_changed(study.dir / "study.json", dumps_json(study_record(study)))
    work = [s for s in study.steps.values() if s.stage != "page"]
    pages = [s for s in study.steps.values() if s.stage == "page"]
    if only:
        work, pages = [s for s in work if only in s.run_id], [s for s in pages if only in s.run_id]
    bar = tqdm(total=len(work) + len(pages), desc=f"{study.name}/{profile}", unit="step", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    attempts = _Attempts(study, report, package, force=force, bar=bar)
    for step in work:
        attempts.attempt(step)
    if not dry_run:
        evaluated = {k: v for k, v in attempts.upstream.items() if k.startswith("evaluate/")}
        collect(study, build_key(evaluated, package))
    tables = tables_fingerprint(study) + measured_fingerprint()
    for step in pages:
        attempts.attempt(step, extra=tables)
    bar.close()
    if not dry_run:
        report.results = publish(study)
    report.seconds = time.perf_counter() - start
    return report


def measured_fingerprint() -> str:
    """Hash of the committed measured files (``book/measured/``) that the cost page reads."""
    from textonly.cost.report import MEASURED

    files = sorted(MEASURED.glob("*")) if MEASURED.is_dir() else []
    return build_key([f.name for f in files if f.is_file()], *[f.read_bytes() for f in files if f.is_file()])


def study_record(study: Study) -> dict:
    """The resolved study, written next to its runs (what the notebooks were given)."""
    return {"name": study.name, "profile": study.profile, "config": str(study.config_path),
            "root": str(study.root), "paths": {k: str(v) for k, v in study.paths.items()},
            "datasets": study.datasets, "models": study.models, "train": study.train,
            "evaluate": study.evaluate, "grids": study.grids, "cells": [asdict(c) for c in study.cells],
            "steps": {k: {"notebook": s.notebook, "parameters": s.parameters, "needs": list(s.needs)}
                      for k, s in study.steps.items()}}
