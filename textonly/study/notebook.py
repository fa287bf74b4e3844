"""Executing one step's notebook with papermill, naming its failure, and the fingerprints of what a
notebook execution depends on (its cells, the package's source)."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

from textonly import __version__
from textonly.core.fileio import build_key
from textonly.study.plan import Step


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


def _kernel_manager(log_path: Path, sockets: str):
    """A kernel manager whose kernel writes its own stderr (not the notebook's) to a log file,
    runs in this Python, talks over Unix sockets at ``sockets`` (TCP ports picked by kernels
    started side by side can collide), and leaves the matplotlib backend to the kernel."""
    from jupyter_client.manager import AsyncKernelManager

    class Manager(AsyncKernelManager):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.transport, self.ip = "ipc", sockets

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


def execute(study, step: Step) -> None:
    """Execute a step's notebook with papermill into its run directory (raises on failure)."""
    import papermill

    step.dir.mkdir(parents=True, exist_ok=True)
    parameters = {"config": str(study.config_path), "profile": study.profile, "root": str(study.root),
                  "run_id": step.run_id, **step.parameters}
    # a short folder of its own for the kernel's sockets (a Unix socket's path is at most 107 bytes)
    with tempfile.TemporaryDirectory(prefix="textonly-kernel-") as sockets:
        papermill.execute_notebook(
            str(study.notebooks / step.notebook), str(step.executed), parameters=parameters, kernel_name="python3",
            progress_bar=False, cwd=str(step.dir),
            kernel_manager_class=_kernel_manager(step.dir / "kernel.log", os.path.join(sockets, "kernel")))


def failure_message(step: Step, exc: BaseException) -> str:
    """One line naming the notebook, the step, the cell that failed and its error."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        what = f"{exc.ename}: {exc.evalue}".strip()
        cell = f", cell [{exc.exec_count}]"
    else:
        what, cell = f"{type(exc).__name__}: {exc}".strip(), ""
    return f"notebooks/{step.notebook} failed ({step.run_id}{cell}): {what}; see {step.executed}"
