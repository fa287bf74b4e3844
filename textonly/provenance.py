"""Provenance of every result file: git commit, package versions, device, seed, data hash."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from textonly.config import PROJECT_ROOT

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


def data_hash(root: str | Path) -> str:
    """Hash of a dataset's ``annotations.jsonl`` (the questions, answers and descriptions)."""
    return hashlib.sha256((Path(root) / "annotations.jsonl").read_bytes()).hexdigest()[:16]


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


def model_identity(name_or_path: str) -> bytes:
    """What identifies a model's weights cheaply: an embedded model's build fingerprint, else
    a local model's config and file sizes, else the hub id."""
    path = Path(name_or_path)
    if (path / "pretrain_config.json").is_file():
        return json.loads((path / "pretrain_config.json").read_text())["fingerprint"].encode()
    if path.is_dir():
        sizes = sorted((f.name, f.stat().st_size) for f in path.glob("*.safetensors"))
        return (path / "config.json").read_bytes() + repr(sizes).encode()
    return name_or_path.encode()
