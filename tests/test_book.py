"""The book builds offline with Jupyter Book 1.x and shows the generated world cards."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from textonly.config import PROJECT_ROOT
from textonly.pretrain import PretrainConfig, pretrain


@pytest.mark.slow
def test_book_builds_with_world_cards(worlds, tmp_path):
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(PROJECT_ROOT / name, tmp_path / name)
    shutil.copytree(PROJECT_ROOT / "book", tmp_path / "book")
    (tmp_path / "data" / "models").mkdir(parents=True)
    (tmp_path / "data" / "worlds").symlink_to(worlds)
    # a few-step tiny model stands in for the default base model: the page needs its card
    pretrain(PretrainConfig(size="tiny", worlds=str(worlds), steps=(1, 1, 1)),
             tmp_path / "data" / "models" / "base-small-seed0-f1", progress=False, evaluate=False)
    jb = Path(sys.executable).with_name("jupyter-book")
    result = subprocess.run([str(jb), "build", str(tmp_path), "--warningiserror", "--quiet"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    page = (tmp_path / "_build" / "html" / "book" / "worlds.html").read_text()
    assert page.count('alt="samples"') == 2
    assert "heritage" in page and "237" in page  # a count from the generated card
    assert (tmp_path / "_build" / "html" / "index.html").is_file()
    base = (tmp_path / "_build" / "html" / "book" / "base_model.html").read_text()
    assert 'alt="training curves"' in base and "LLaVA architecture" in base
