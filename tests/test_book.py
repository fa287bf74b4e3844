"""The book builds offline with Jupyter Book 1.x and shows the generated world cards."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from textonly.config import PROJECT_ROOT


@pytest.mark.slow
def test_book_builds_with_world_cards(worlds, tmp_path):
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(PROJECT_ROOT / name, tmp_path / name)
    shutil.copytree(PROJECT_ROOT / "book", tmp_path / "book")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "worlds").symlink_to(worlds)
    jb = Path(sys.executable).with_name("jupyter-book")
    result = subprocess.run([str(jb), "build", str(tmp_path), "--warningiserror", "--quiet"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    page = (tmp_path / "_build" / "html" / "book" / "worlds.html").read_text()
    assert page.count('alt="samples"') == 2
    assert "heritage" in page and "237" in page  # a count from the generated card
    assert (tmp_path / "_build" / "html" / "index.html").is_file()
