"""The study on a workflow engine: Snakemake runs each step of a study profile as one job (one
notebook executed by papermill, ``python -m textonly study step``), locally on every core by
default, or on a cluster by a profile alone (``workflow/profiles/slurm``).

The study config stays the one place that says what runs: ``workflow/Snakefile`` asks a
:class:`Workflow` for each step's output (its ``step.json``), inputs (the ``step.json`` of the
steps it reads), fingerprint (its settings, its notebook's cells, the package's source: a change
re-runs it and what depends on it) and command. :func:`run_study` is the command line's way in:
it runs Snakemake and reports per step what executed, what was up to date, what failed (with
the notebook, the cell and the error) and what could not run because an input failed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from textonly.core.config import PROJECT_ROOT
from textonly.core.errors import TextonlyError
from textonly.core.fileio import build_key, dumps_json, write_text_atomic
from textonly.study.collect import collect, publish, tables_fingerprint
from textonly.study.config import Study, load_study
from textonly.study.notebook import notebook_fingerprint, package_fingerprint
from textonly.study.plan import NOTEBOOKS, STEP_FILE
from textonly.study.steps import FAILED_FILE, recorded, write_if_changed

SNAKEFILE = PROJECT_ROOT / "workflow" / "Snakefile"
#: Snakemake profiles shipped with the project: ``default`` (local, read by Snakemake itself), ``slurm``.
PROFILES = PROJECT_ROOT / "workflow" / "profiles"
#: The stages whose steps are notebooks, in the order they run.
STAGES = (*NOTEBOOKS, "page")
#: Written by the ``collect`` job beside the tables (the pages' input), and by ``publish`` into
#: the results folder (the workflow's final output).
TABLES_MARKER, PUBLISHED_MARKER = "tables.json", "study.json"


def measured_fingerprint() -> str:
    """Hash of the committed measured files (``book/measured/``) that the cost page reads."""
    from textonly.cost.report import MEASURED

    files = sorted(f for f in MEASURED.glob("*") if f.is_file()) if MEASURED.is_dir() else []
    return build_key([f.name for f in files], *[f.read_bytes() for f in files])


class Workflow:
    """What the Snakefile asks of a study profile (``config``: Snakemake's ``--config`` items
    ``study``, ``profile``, ``root`` and, for tests, ``step``: the command a job runs)."""

    def __init__(self, config: dict, workdir: str | os.PathLike = "."):
        self.study: Study = load_study(config.get("study", "studies/main.yaml"), config.get("profile", "default"),
                                       root=config.get("root") or workdir)
        self.package = package_fingerprint()
        study = self.study
        prefix = config.get("step") or f"{shlex.quote(sys.executable)} -m textonly study step"
        self.command = (f"{prefix} --config {shlex.quote(str(study.config_path))} --profile "
                        f"{shlex.quote(study.profile)} --root {shlex.quote(str(study.root))}")

    def path(self, path: Path) -> str:
        """A path as the workflow names it: relative to the study root where it lies inside it."""
        path = Path(path)
        return str(path.relative_to(self.study.root)) if path.is_relative_to(self.study.root) else str(path)

    def output(self, stage: str) -> str:
        """The output pattern of a stage's rule (``{run}``: the part of the run id after the stage)."""
        pattern = self.study.dir / stage / ("" if stage == "worlds" else "{run}") / STEP_FILE
        return self.path(pattern)

    @staticmethod
    def run_id(stage: str, wildcards) -> str:
        return stage if stage == "worlds" else f"{stage}/{wildcards.run}"

    def step_file(self, run_id: str) -> str:
        return self.path(self.study.steps[run_id].dir / STEP_FILE)

    def inputs(self, stage: str, wildcards) -> list[str]:
        """The ``step.json`` of the steps this one reads; a page reads the tables."""
        step = self.study.steps[self.run_id(stage, wildcards)]
        return [self.step_file(n) for n in step.needs] + ([self.tables] if stage == "page" else [])

    def key(self, stage: str, wildcards) -> str:
        """What determines a step's result besides its inputs: its settings, its notebook's cells,
        the package (and, for the pages, the committed measurements)."""
        step = self.study.steps[self.run_id(stage, wildcards)]
        extra = measured_fingerprint() if stage == "page" else ""
        return build_key({"stage": step.stage, "settings": step.settings}, self.package,
                         notebook_fingerprint(self.study.notebooks / step.notebook), extra)

    def run_ids(self, stage: str) -> list[str]:
        return [k for k, s in self.study.steps.items() if s.stage == stage]

    @property
    def tables(self) -> str:
        return self.path(self.study.dir / TABLES_MARKER)

    @property
    def published(self) -> str:
        return self.path(self.study.results_dir / PUBLISHED_MARKER)

    def evaluations(self, wildcards=None) -> list[str]:
        return [self.step_file(r) for r in self.run_ids("evaluate")]

    def shown(self, wildcards=None) -> list[str]:
        """What the results folder shows: the tables, the worlds, the base models, the pages."""
        return [self.tables, *(self.step_file(r) for s in ("worlds", "base", "page") for r in self.run_ids(s))]

    def collect(self) -> None:
        """The tables of every evaluation (rewritten only when they change), then the marker."""
        collect(self.study)
        write_text_atomic(self.study.dir / TABLES_MARKER, dumps_json({"tables": tables_fingerprint(self.study)}))

    def publish(self) -> None:
        """The tables and the executed pages into the results folder the book renders."""
        out = publish(self.study)
        write_text_atomic(out / PUBLISHED_MARKER, dumps_json({
            "name": self.study.name, "profile": self.study.profile, "config": str(self.study.config_path),
            "runs": str(self.study.dir), "tables": tables_fingerprint(self.study)}))


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
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked and not self.error

    def summary(self) -> str:
        parts = [f"{len(self.skipped)} up to date",
                 f"{len(self.executed)} {'to execute' if self.dry_run else 'executed'}"]
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        if self.blocked:
            parts.append(f"{len(self.blocked)} not run (an input failed)")
        return ", ".join(parts) + f" in {self.seconds:.1f} s" + (f"; {self.error}" if self.error else "")


def cluster_profile(name: str | os.PathLike) -> Path:
    """A Snakemake profile folder: a name under ``workflow/profiles`` or a path."""
    folder = PROFILES / str(name) if (PROFILES / str(name)).is_dir() else Path(name)
    if not (folder / "config.yaml").is_file():
        shipped = ", ".join(sorted(p.name for p in PROFILES.iterdir() if p.is_dir()))
        raise TextonlyError(f"no Snakemake profile {name!r} (a folder with config.yaml; shipped: {shipped})")
    return folder.resolve()


@contextlib.contextmanager
def _study_lock(root: Path):
    """One study run at a time per root. The lock goes with the process, so a killed run leaves
    none behind (Snakemake's own lock would need ``--unlock``; it is turned off)."""
    folder = root / ".snakemake"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "textonly.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TextonlyError(f"another study run is running in {root} (lock {folder / 'textonly.lock'})") from None
        yield


def snakemake_command(study: Study, *, targets=(), forced=(), force: bool = False, dry_run: bool = False,
                      cores: int | None = None, cluster: str | None = None, step: str | None = None,
                      extra=()) -> list[str]:
    """The Snakemake command line that runs (``targets``: some steps; default: all) a study profile.
    ``forced``: the steps whose recorded outputs are gone or replaced, run again with what reads them."""
    config = [f"study={study.config_path}", f"profile={study.profile}", f"root={study.root}"]
    if step:
        config.append(f"step={step}")
    command = [sys.executable, "-m", "snakemake", *targets, "--snakefile", str(SNAKEFILE),
               "--config", *config, "--directory", str(study.root)]
    if forced:
        command += ["--forcerun", *forced]
    if force:
        command += ["--force"] if targets else ["--forceall"]
    if cluster:
        command += ["--profile", str(cluster_profile(cluster))]
    if cores:
        command += ["--cores", str(cores)]
    return command + ["--nolock", *(["--dry-run"] if dry_run else []), *extra]


def run_study(config: str | os.PathLike, profile: str = "default", *, root: str | os.PathLike | None = None,
              only: str | None = None, force: bool = False, dry_run: bool = False, cores: int | None = None,
              cluster: str | None = None, extra=(), step: str | None = None) -> Report:
    """Run a study profile with Snakemake: every step not up to date, the tables, the pages and
    ``results/``; independent steps go on when one fails; a killed run resumes where it stopped.

    ``only``: just the steps whose run id contains this text (and what they need); ``force``:
    execute even up-to-date steps; ``dry_run``: report what would run; ``cores``: local cores
    (default: all); ``cluster``: a Snakemake profile (``slurm``); ``extra``: more Snakemake options.
    """
    start, wall = time.time(), time.perf_counter()
    study = load_study(config, profile, root=root)
    flow = Workflow({"study": str(study.config_path), "profile": profile, "root": str(study.root)})
    wanted = [k for k in study.steps if not only or only in k]
    if only and not wanted:
        raise TextonlyError(f"no step of {study.name}/{profile} has {only!r} in its run id")
    targets = [flow.step_file(k) for k in wanted] if only else []
    forced = [flow.step_file(k) for k, s in study.steps.items()
              if (s.dir / STEP_FILE).is_file() and recorded(study, s) is None]
    command = snakemake_command(study, targets=targets, forced=forced, force=force, dry_run=dry_run, cores=cores,
                                cluster=cluster, step=step, extra=extra)
    report = Report(dry_run=dry_run)
    with _study_lock(study.root):
        if dry_run:
            done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            _read_plan(done.stdout, flow, wanted, report)
        else:
            write_if_changed(study.dir / "study.json", dumps_json(study_record(study)))
            done = subprocess.run(command)
            _read_outcomes(study, wanted, start, report)
    if done.returncode and not report.failed:
        report.error = f"snakemake exited with {done.returncode} (see its messages above)"
        if dry_run:
            report.error += ":\n" + done.stdout[-3000:]
    report.results = study.results_dir if not dry_run and not only else None
    report.seconds = time.perf_counter() - wall
    return report


def _read_plan(output: str, flow: Workflow, wanted: list[str], report: Report) -> None:
    """A dry run's jobs (their ``output:`` lines), as run ids; its job counts and reasons go to the terminal."""
    files = {flow.step_file(k): k for k in wanted}
    planned = {files[f] for line in output.splitlines() if line.strip().startswith("output:")
               for f in re.split(r",\s*", line.split("output:", 1)[1].strip()) if f in files}
    report.executed = [k for k in wanted if k in planned]
    report.skipped = [k for k in wanted if k not in planned]
    if "Job stats:" in output:  # the jobs per stage, and why they would run
        print(output[output.find("Job stats:"):].rstrip(), file=sys.stderr)


def _read_outcomes(study: Study, wanted: list[str], start: float, report: Report) -> None:
    """Per step: executed in this run (its ``step.json`` is new), up to date, failed (its
    ``failed.json`` is new) or not run (an input failed)."""
    import json

    for run_id in wanted:
        step = study.steps[run_id]
        done, failed = step.dir / STEP_FILE, step.dir / FAILED_FILE
        if done.is_file():
            (report.executed if done.stat().st_mtime >= start else report.skipped).append(run_id)
        elif failed.is_file() and failed.stat().st_mtime >= start:
            report.failed[run_id] = json.loads(failed.read_text())["error"]
        else:
            inputs = [n for n in step.needs if n in report.failed or n in report.blocked]
            report.blocked[run_id] = "needs " + (", ".join(inputs) if inputs else "every evaluation"
                                                 if step.stage == "page" else "a step that did not finish")


def study_record(study: Study) -> dict:
    """The resolved study, written next to its runs (what the notebooks were given)."""
    return {"name": study.name, "profile": study.profile, "config": str(study.config_path),
            "root": str(study.root), "paths": {k: str(v) for k, v in study.paths.items()},
            "datasets": study.datasets, "models": study.models, "train": study.train,
            "evaluate": study.evaluate, "grids": study.grids, "cells": [asdict(c) for c in study.cells],
            "steps": {k: {"notebook": s.notebook, "parameters": s.parameters, "needs": list(s.needs)}
                      for k, s in study.steps.items()}}
