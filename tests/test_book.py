"""The main study's smoke profile runs end to end through papermill, and the book builds from it
offline (Jupyter Book 1.x, warnings as errors); a second run executes and rebuilds nothing."""

import re
import subprocess
import time

import pandas as pd
import pytest

from textonly.core.config import PROJECT_ROOT
from textonly.core.fileio import read_jsonl
from textonly.study.collect import KEYS
from textonly.study.config import load_study
from textonly.study.engine import run_study

pytestmark = pytest.mark.slow


def _text(path) -> str:
    """A page's text: tags dropped, whitespace collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", path.read_text(encoding="utf-8")))


def test_smoke_study_runs_every_stage(smoke_book):
    report = smoke_book.report
    assert report.ok, report.failed or report.blocked
    study = load_study(PROJECT_ROOT / "studies" / "main.yaml", "smoke", root=smoke_book.root)
    assert sorted(report.executed) == sorted(study.steps)
    assert {s.stage for s in study.steps.values()} == {"worlds", "base", "convert", "train", "evaluate", "page"}
    results = pd.read_csv(smoke_book.root / "results" / "results.csv")
    overall = results[results["breakdown"] == "overall"]
    assert len(overall) == sum(s.stage == "evaluate" for s in study.steps.values())
    assert set(overall["mode"]) == {"original", "image_text", "text_only"}
    runs = pd.read_csv(smoke_book.root / "results" / "runs.csv")
    # each row's accuracy is its evaluation's share of correct answers
    for _, row in overall.merge(runs[[*KEYS, "eval_dir"]], on=KEYS, validate="one_to_one").iterrows():
        answers = read_jsonl(study.dir / row["eval_dir"] / "predictions.jsonl")
        assert row["accuracy"] == pytest.approx(sum(a["correct"] for a in answers) / len(answers), abs=1e-6)
    trained = runs[runs["mode"] != "original"]
    assert (trained["train_flops"] > 0).all() and trained["train_energy_mode"].notna().all()
    assert (trained[trained["mode"] == "text_only"]["train_image_tokens"] == 0).all()
    for step in study.steps.values():  # every run directory keeps its executed notebook
        assert step.executed.is_file(), step.run_id


def test_book_builds_offline_from_the_smoke_results(smoke_book):
    build = smoke_book.build
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    pages = smoke_book.html / "results" / "pages"
    main = (pages / "06_results.html").read_text(encoding="utf-8")
    assert main.count("<table") >= 4 and "McNemar p vs original" in main and "paper: Choi et al. 2024" in main
    assert all(f"<td>{scoring}</td>" in main for scoring in ("option", "letter", "generate"))  # scorings beside
    assert re.search(r'<img[^>]+src="[^"]*_images/[^"]+\.png"', main)  # the seaborn figure
    prose = _text(pages / "06_results.html")
    assert re.search(r"overall accuracy was \d+\.\d% for the original model", prose)  # glued, not typed
    assert "profile smoke" in prose
    worlds = _text(pages / "01_worlds.html")
    assert "150 named kinds in 30 look-alike groups" in worlds and "name_only" in worlds
    base = _text(pages / "02_base_model.html")
    assert "What the encoder sees" in base and "What the VLM can do" in base and "language model" in base
    assert re.search(r"\d+ of the \d+ targets are met", base)  # glued from the competence table
    energy = _text(pages / "08_energy.html")
    assert "estimate" in energy and "train_pflop" in energy
    assert "name_only" in _text(pages / "09_description_quality.html")
    assert "data:image/png;base64" in (pages / "10_explorer.html").read_text(encoding="utf-8")
    cost_page = _text(pages / "11_cost.html")
    assert "qwen2-vl-7b" in cost_page and "break-even" in cost_page and "estimate" in cost_page
    assert re.search(r"predicted to cost \d+% less per K-VISCUIT sample", cost_page)  # glued, not typed
    for page in ("book/intro.html", "book/reproduce.html", "book/real_models.html", "book/cluster.html"):
        assert (smoke_book.html / page).is_file()


def test_second_run_executes_nothing_and_rebuilds_nothing(smoke_book):
    assert smoke_book.build.returncode == 0
    page = smoke_book.html / "results" / "pages" / "06_results.html"
    before = page.stat().st_mtime_ns
    again = run_study(PROJECT_ROOT / "studies" / "main.yaml", "smoke", root=smoke_book.root)
    assert again.ok and again.executed == []
    started = time.perf_counter()
    rebuild = subprocess.run(smoke_book.command, capture_output=True, text=True)
    assert rebuild.returncode == 0 and again.seconds + time.perf_counter() - started < 30  # `make book` again
    assert page.stat().st_mtime_ns == before  # no page read or written again
