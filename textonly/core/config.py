"""Where things live: the project root and the configurable root of the real datasets."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]

#: Environment variable that points at the folder holding the real datasets
#: (``k-viscuit/``, ``butterflies-100/``). Default: ``../shared/datasets`` beside the project.
DATA_ROOT_ENV = "TEXTONLY_DATA_ROOT"


def data_root() -> Path:
    """The root folder of the real (read-only) datasets."""
    value = os.environ.get(DATA_ROOT_ENV)
    if value:
        return Path(value).expanduser().resolve()
    return (PROJECT_ROOT.parent / "shared" / "datasets").resolve()


def resolve_dataset_path(name_or_path: str | os.PathLike) -> Path:
    """An existing path as it is; otherwise a name looked up under :func:`data_root`."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    candidate = data_root() / path
    if candidate.exists():
        return candidate
    return path
