"""The study: configs and profiles, the committed notebooks, and the workflow engine's skipping,
resuming and failure reporting (with a fake job, and once with a real failing notebook)."""

import json
import re
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

from textonly.study import config as st
from textonly.study import plan
from textonly.study.engine import run_study, snakemake_command
from textonly.core.config import PROJECT_ROOT
from textonly.core.errors import TextonlyError
from textonly.core.fileio import dumps_jsonl, read_jsonl

NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("*.ipynb"))


# --- configs and profiles -----------------------------------------------------------------

def test_profiles_of_the_main_study():
    smoke, default, full = (st.load_study("studies/main.yaml", p) for p in ("smoke", "default", "full"))
    for s in (smoke, default, full):
        main = [c for c in s.cells if c.condition == "image" and c.scoring == "option"]
        assert {c.dataset for c in main} == {"wings", "heritage"}
        assert {"original", "image_text", "text_only"} <= {c.mode for c in main}
        # original is not trained: no seed, one cell per dataset and model
        assert all(c.seed is None and c.quality is None for c in s.cells if c.mode == "original")
        assert all(c.quality is None for c in s.cells if c.mode == "image_text")
    assert {c.model for c in smoke.cells} == {"tiny-smoke"} and smoke.train["max_steps"] > 0
    assert {c.model for c in default.cells} == {"small"}
    assert len({c.seed for c in default.cells if c.mode == "text_only"}) >= 3
    assert {c.quality for c in default.cells if c.mode == "text_only"} == {"full", "partial", "wrong", "name_only"}
    assert {c.condition for c in default.cells} == {"image"}
    assert {c.scoring for c in default.cells} == {"option", "letter", "generate"}  # the paper's beside the organism's
    assert {c.scoring for c in smoke.cells} == {"option", "letter", "generate"}
    assert {c.condition for c in full.cells} == {"image", "no_image", "description"}
    # cells shared by two grids run once; steps come upstream first
    assert len(default.cells) == len(set(default.cells))
    order = list(default.steps)
    for step in default.steps.values():
        assert all(order.index(n) < order.index(step.run_id) for n in step.needs)
    assert default.model_path("small").endswith("data/models/base-small-seed0-f1")  # shared with `make base`


def test_real_models_study_loads_without_touching_data():
    s = st.load_study("studies/real.yaml", "full")
    assert {s.models[c.model]["hub"] for c in s.cells} == {"llava-hf/llava-v1.6-mistral-7b-hf",
                                                           "Qwen/Qwen2-VL-7B-Instruct"}
    assert {c.scoring for c in s.cells} == {"letter", "generate"}
    assert not any(step.stage in ("worlds", "base") for step in s.steps.values())


def _config(tmp_path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


BASE = """
name: t
datasets: {wings: {world: wings}}
models: {m: {pretrain: {size: tiny, steps: [1, 1, 1]}}}
profiles:
  p:
    grids:
      g: %s
"""


@pytest.mark.parametrize("grid, message", [
    ("{datasets: [wings], models: [m], modes: [text_only], colours: [red]}", "unknown axis colours"),
    ("{datasets: [wings], models: [m], modes: [finetune]}", "mode 'finetune'"),
    ("{datasets: [birds], models: [m], modes: [original]}", "dataset 'birds'"),
    ("{datasets: [wings], models: [m], modes: [text_only], qualities: [vague]}", "quality 'vague'"),
    ("{datasets: [wings], models: [m]}", "lists no modes"),
])
def test_config_errors_name_the_problem(tmp_path, grid, message):
    with pytest.raises(TextonlyError, match=message):
        st.load_study(_config(tmp_path, BASE % grid), "p")


def test_unknown_profile_lists_the_profiles(tmp_path):
    config = _config(tmp_path, BASE % "{datasets: [wings], models: [m], modes: [original]}")
    with pytest.raises(TextonlyError, match="no profile 'q'; it has p"):
        st.load_study(config, "q")


def test_step_by_scalars_or_run_id():
    s = st.load_study("studies/main.yaml", "default")
    by_scalars = s.step("train", dataset="wings", model="small", mode="text_only", seed=0, quality="partial")
    assert by_scalars is s.step(run_id="train/wings-small-text_only-partial-s0")
    assert s.step("evaluate", dataset="wings", model="small", mode="original", seed=2, quality="full").parameters[
        "seed"] is None  # original ignores seed and quality
    with pytest.raises(TextonlyError, match="disagrees"):
        s.step(run_id="train/wings-small-text_only-partial-s0", seed=2)
    with pytest.raises(TextonlyError, match="not a step"):
        s.step("train", dataset="wings", model="small", mode="text_only", seed=7, quality="full")


# --- the committed notebooks ----------------------------------------------------------------

def test_every_stage_and_page_has_its_notebook():
    names = {p.name for p in NOTEBOOKS}
    assert set(plan.NOTEBOOKS.values()) | set(plan.PAGES) == names
    # numbered in the order they run, from 00 (a real dataset's split) without gaps
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(len(NOTEBOOKS))]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "outputs are never committed"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is code[0], "exactly one parameters cell, the first code cell"
    names = {line.split("=")[0].strip() for line in tagged[0].source.splitlines() if "=" in line
             and not line.lstrip().startswith("#")}
    assert {"config", "profile", "root", "run_id"} <= names
    assert "from textonly" in "".join(c.source for c in code)  # the package does the work


# --- the workflow engine (Snakemake), with a fake job ------------------------------------------

SMALL = """
name: fake
paper: %s
datasets: {wings: {world: wings}}
models: {m: {pretrain: {size: tiny, steps: [1, 1, 1]}}}
profiles:
  p:
    grids:
      main: {datasets: [wings], models: [m], modes: [original, image_text, text_only], seeds: [0, 1]}
""" % (PROJECT_ROOT / "studies" / "paper.yaml")

#: tests/fake_step.py: each job records its step as the real one does, writing in milliseconds what the
#: stage's notebook would leave behind; it appends its run id to <root>/calls.txt and fails those in <root>/fail.txt
FAKE_STEP = f"{sys.executable} {Path(__file__).with_name('fake_step.py')}"


class FakeStudy:
    def __init__(self, root: Path, config: Path):
        self.root, self.config = root, config

    def run(self, **kw):
        (self.root / "calls.txt").unlink(missing_ok=True)
        return run_study(self.config, "p", root=self.root, step=FAKE_STEP, **kw)

    @property
    def calls(self) -> list[str]:
        path = self.root / "calls.txt"
        return path.read_text().split() if path.is_file() else []

    def fail(self, *run_ids):
        (self.root / "fail.txt").write_text("\n".join(run_ids))


@pytest.fixture
def fake_study(tmp_path, worlds):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "worlds").symlink_to(worlds)
    return FakeStudy(tmp_path, _config(tmp_path, SMALL))


def test_engine_runs_once_then_nothing(fake_study):
    root = fake_study.root
    first = fake_study.run()
    s = st.load_study(fake_study.config, "p", root=root)
    assert first.ok and sorted(first.executed) == sorted(s.steps) and sorted(fake_study.calls) == sorted(s.steps)
    assert set(first.executed) >= {"worlds", "base/m", "convert/wings-full", "page/06_results"}
    # the order the steps ran in respects what each reads
    calls = fake_study.calls
    for run_id, step in s.steps.items():
        assert all(calls.index(n) < calls.index(run_id) for n in step.needs), run_id
    assert all(calls.index(e) < calls.index("page/06_results") for e in calls if e.startswith("evaluate/"))
    again = fake_study.run()
    assert again.ok and again.executed == [] and fake_study.calls == [] and sorted(again.skipped) == sorted(s.steps)
    # the tables: one row per evaluation and group; McNemar per seed; costs with FLOPs
    results = (root / "results" / "results.csv").read_text()
    assert results.count("\nwings,m,text_only,full,0,image,option,overall,overall,") == 1
    import pandas as pd

    summary = pd.read_csv(root / "results" / "summary.csv")
    overall = summary[(summary["breakdown"] == "overall")].set_index("mode")
    assert overall.loc["text_only", "seeds"] == 2 and overall.loc["original", "seeds"] == 1
    assert overall.loc["original", "accuracy"] == 0 and overall.loc["text_only", "accuracy"] == pytest.approx(2 / 3, 0.02)
    comparisons = pd.read_csv(root / "results" / "comparisons.csv")
    pairs = set(zip(comparisons["a"], comparisons["b"]))
    assert pairs == {("image_text", "original"), ("text_only", "original"), ("text_only", "image_text")}
    # pooled over the two seeds: each seed's answer to a question is one pair (original repeated)
    pooled = comparisons[(comparisons["seed"].astype(str) == "pooled") & (comparisons["group"] == "overall")]
    n_questions = len(read_jsonl(root / "data" / "worlds" / "wings" / "test" / "annotations.jsonl"))
    assert set(pooled["n"]) == {2 * n_questions} and len(pooled) == 3
    vs_original = pooled[(pooled["a"] == "text_only") & (pooled["b"] == "original")].iloc[0]
    assert vs_original["a_only"] == 2 * sum(i % 3 < 2 for i in range(n_questions)) and vs_original["b_only"] == 0
    runs = pd.read_csv(root / "results" / "runs.csv")
    trained = runs[runs["mode"] == "image_text"].iloc[0]
    assert trained["train_flops"] == 7e9  # the figure the run recorded, never re-estimated
    assert sorted(p.name for p in (root / "results" / "pages").iterdir()) == [
        "01_worlds.ipynb", "02_base_model.ipynb", *plan.PAGES]


def test_a_changed_input_or_setting_reruns_only_what_depends_on_it(fake_study):
    root = fake_study.root
    fake_study.run()
    s = st.load_study(fake_study.config, "p", root=root)
    # someone replaced a finished training run: it, its evaluation and the pages run again
    run = s.steps["train/wings-m-text_only-full-s1"]
    record = json.loads((run.dir / "run.json").read_text())
    (run.dir / "run.json").write_text(json.dumps({**record, "fingerprint": "other"}))
    assert fake_study.run().ok
    assert [c for c in fake_study.calls if not c.startswith("page/")] == [
        "train/wings-m-text_only-full-s1", "evaluate/wings-m-text_only-full-s1-image-option"]
    # a changed setting (the evaluation's batch size) re-runs the evaluations and the pages only
    fake_study.config.write_text(SMALL.replace("  p:\n", "  p:\n    evaluate: {batch_size: 3}\n"))
    assert fake_study.run().ok
    assert sorted(c for c in fake_study.calls if not c.startswith("page/")) == sorted(
        k for k in s.steps if k.startswith("evaluate/"))
    # a deleted result (the step's record is there, the model it made is not) is made again
    shutil.rmtree(Path(s.model_path("m")))
    fake_study.config.write_text(SMALL.replace("  p:\n", "  p:\n    evaluate: {batch_size: 3}\n"))
    assert fake_study.run().ok and "base/m" in fake_study.calls and "worlds" not in fake_study.calls


def test_a_failing_step_is_named_and_the_independent_ones_go_on(fake_study):
    fake_study.fail("train/wings-m-image_text-s0")
    report = fake_study.run()
    assert not report.ok and list(report.failed) == ["train/wings-m-image_text-s0"]
    assert "notebooks/04_train.ipynb failed (train/wings-m-image_text-s0)" in report.failed[
        "train/wings-m-image_text-s0"] and "boom" in report.failed["train/wings-m-image_text-s0"]
    assert report.blocked["evaluate/wings-m-image_text-s0-image-option"] == "needs train/wings-m-image_text-s0"
    assert "evaluate/wings-m-text_only-full-s1-image-option" in report.executed  # the independent ones went on
    assert {k for k in report.blocked if k.startswith("page/")} == {f"page/{Path(p).stem}" for p in plan.PAGES}
    fake_study.fail()
    retry = fake_study.run()
    assert retry.ok and [c for c in fake_study.calls if not c.startswith("page/")] == [
        "train/wings-m-image_text-s0", "evaluate/wings-m-image_text-s0-image-option"]


def test_a_killed_study_resumes(fake_study):
    """The whole run is killed (SIGKILL: no clean-up) while a step runs; the next run executes
    that step and what is left, and nothing that had finished."""
    import os
    import signal
    import subprocess
    import time

    slow = "train/wings-m-text_only-full-s0"
    (fake_study.root / "sleep.txt").write_text(slow)
    code = ("import sys; from textonly.study.engine import run_study; "
            f"run_study({str(fake_study.config)!r}, 'p', root={str(fake_study.root)!r}, step={FAKE_STEP!r}, cores=1)")
    process = subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    began = time.monotonic()
    while (slow not in fake_study.calls) and time.monotonic() - began < 120:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = fake_study.calls
    (fake_study.root / "sleep.txt").unlink()
    assert slow in before and "page/06_results" not in before
    report = fake_study.run()
    s = st.load_study(fake_study.config, "p", root=fake_study.root)
    assert report.ok and slow in fake_study.calls
    assert set(fake_study.calls) == set(s.steps) - (set(before) - {slow})  # each step once in all


def test_only_runs_a_subset(fake_study):
    report = fake_study.run(only="worlds")
    assert fake_study.calls == ["worlds"] and report.ok and report.executed == ["worlds"]
    with pytest.raises(TextonlyError, match="no step"):
        fake_study.run(only="nothing-like-this")


def test_the_real_study_full_grid_plans_under_the_slurm_profile(tmp_path):
    """The engine plans every step of the paper's grid as a SLURM job: a GPU for each training and
    evaluation, memory and time per stage (a dry run: nothing is submitted)."""
    import subprocess

    s = st.load_study("studies/real.yaml", "full", root=tmp_path)
    command = snakemake_command(s, cluster="slurm", dry_run=True)
    out = subprocess.run(command, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    text = out.stdout + out.stderr
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", text[text.index("Job stats:"):], flags=re.M))
    stages = {}
    for step in s.steps.values():
        stages[step.stage] = stages.get(step.stage, 0) + 1
    assert {k: int(v) for k, v in stats.items() if k in stages} == stages
    assert stages["train"] == 2 * 2 * 2 * 3 and stages["evaluate"] == 2 * 2 * (1 + 2 * 3) * 2
    jobs = [block for block in re.split(r"\n(?=rule |localrule )", text) if block.startswith("rule ")]
    for block in jobs:
        stage = block.split(":")[0].split()[1]
        resources = re.search(r"resources: (.*)", block).group(1)
        assert "mem_mb=" in resources and "runtime=" in resources, block
        assert ("gpu=1" in resources) == (stage in ("train", "evaluate", "base", "convert")), block


def test_a_real_failing_notebook_names_its_path_and_error(tmp_path, worlds):
    """papermill runs the notebook in a kernel named python3; the error names notebook, cell and exception."""
    notebooks = tmp_path / "nbs"
    notebooks.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell('config = None\nprofile = None\nroot = None\nrun_id = None',
                                          metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell('assert run_id == "worlds"\nraise ValueError("no such world")')]
    nbformat.write(nb, notebooks / "01_worlds.ipynb")
    shutil.copy(PROJECT_ROOT / "notebooks" / "04_train.ipynb", notebooks / "04_train.ipynb")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "worlds").symlink_to(worlds)
    config = _config(tmp_path, SMALL.replace("name: fake", f"name: fake\nnotebooks: {notebooks}"))
    report = run_study(config, "p", root=tmp_path, only="worlds")
    message = report.failed["worlds"]
    assert "notebooks/01_worlds.ipynb failed (worlds, cell [3]): ValueError: no such world" in message
    executed = st.load_study(config, "p", root=tmp_path).steps["worlds"].executed
    assert str(executed) in message and executed.is_file()
    assert json.loads((executed.parent / "failed.json").read_text())["error"] == message
    assert not (executed.parent / "step.json").exists()


def test_command_line(tmp_path, worlds):
    import subprocess
    import sys

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "worlds").symlink_to(worlds)
    run = [sys.executable, "-m", "textonly", "study", "run", "--profile", "smoke", "--root", str(tmp_path)]
    result = subprocess.run([*run, "--dry-run"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    steps = len(st.load_study("studies/main.yaml", "smoke").steps)
    assert f"(smoke): 0 up to date, {steps} to execute" in result.stdout
    bad = subprocess.run([*run, "--config", str(tmp_path / "missing.yaml")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "missing.yaml" in bad.stderr


def test_a_step_and_a_cluster_profile_by_name_or_a_clear_error(tmp_path):
    import subprocess

    from textonly.study.engine import cluster_profile

    assert cluster_profile("slurm") == PROJECT_ROOT / "workflow" / "profiles" / "slurm"
    with pytest.raises(TextonlyError, match="no Snakemake profile 'pbs'.*shipped: default, slurm"):
        cluster_profile("pbs")
    step = [sys.executable, "-m", "textonly", "study", "step", "--profile", "smoke", "--root", str(tmp_path)]
    bad = subprocess.run([*step, "train/nothing"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: 'train/nothing' is not a step of study 'main'")
