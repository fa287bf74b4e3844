"""Provenance of every result file: git commit, package versions, device, seed, data hash."""

from __future__ import annotations

import hashlib
import platform
import subprocess
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from textonly.core.config import PROJECT_ROOT

PACKAGES = ("textonly", "torch", "transformers", "peft", "tokenizers", "bitsandbytes", "codecarbon", "mistral-common",
            "dashscope")


def git_commit(root: Path = PROJECT_ROOT) -> str:
    """The commit of the project's checkout, with ``-dirty`` when tracked files changed; ``unknown`` outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def device_description() -> dict:
    """The device that computed: GPU name and driver where CUDA is used, else the CPU."""
    import torch

    info = {"platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
        info["driver"] = _nvidia_driver()
    return info


def _nvidia_driver() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else version
    except Exception:  # no NVML: the driver stays unrecorded
        return None


@lru_cache(maxsize=None)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):  # a model's weights need not fit in memory
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, computed once per process for a given (path, size, modification time)."""
    path = Path(path).resolve()
    stat = path.stat()
    return _cached_sha256(str(path), stat.st_size, stat.st_mtime_ns)


def data_hash(root: str | Path) -> str:
    """Hash of a dataset: its ``annotations.jsonl`` and the bytes of every file under its ``images/``."""
    root = Path(root)
    digest = hashlib.sha256((root / "annotations.jsonl").read_bytes())
    images = root / "images"
    files = sorted(p for p in images.rglob("*") if p.is_file()) if images.is_dir() else []
    for file in files:
        digest.update(f"\n{file.relative_to(images).as_posix()}\t{file_sha256(file)}".encode())
    return digest.hexdigest()[:16]


def provenance(*, seed: int | None = None, data: str | Path | None = None) -> dict:
    """Everything a result file records about how it was made."""
    out = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "git_commit": git_commit(),
           "packages": package_versions(), "device": device_description()}
    if seed is not None:
        out["seed"] = seed
    if data is not None:
        out["data"] = str(data)
        out["data_hash"] = data_hash(data)
    return out


def model_identity(name_or_path: str | Path, revision: str | None = None) -> str:
    """What identifies a model: for a local folder, a hash of the bytes of its weights, config and
    processor files (a card, ``*.md``, is left out); for a hub id, the id and ``revision``."""
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        return f"{name_or_path}@{revision}" if revision else str(name_or_path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.iterdir() if p.is_file() and p.suffix != ".md" and not p.name.startswith(".")):
        digest.update(f"{file.name}\t{file_sha256(file)}\n".encode())
    return digest.hexdigest()
