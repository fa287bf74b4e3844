"""The study runner: configs and profiles, the committed notebooks, and the runner's skipping,
resuming and failure reporting (with a fake executor, and once with a real failing notebook)."""

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from textonly.study import config as st
from textonly.study import plan
from textonly.study import runner
from textonly.study.runner import run_study
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


# --- the runner, with a fake executor ---------------------------------------------------------

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


class FakeExecutor:
    """Writes what each stage's notebook would leave behind, in milliseconds; can fail a step."""

    def __init__(self, fail=()):
        self.calls, self.fail, self.runs = [], set(fail), {}

    def __call__(self, study, step):
        self.calls.append(step.run_id)
        self.runs[step.run_id] = self.runs.get(step.run_id, 0) + 1
        step.dir.mkdir(parents=True, exist_ok=True)
        if step.run_id in self.fail:
            raise RuntimeError(f"boom in {step.run_id}")
        p = step.parameters
        if step.stage == "base":
            out = Path(study.model_path(p["model"]))
            out.mkdir(parents=True, exist_ok=True)
            (out / "pretrain_config.json").write_text(json.dumps({
                "fingerprint": "base", "image_tokens": 64, "parameters": {
                    "total": 100, "vision_tower": 30, "multi_modal_projector": 10, "language_model": 60}}))
        elif step.stage == "convert":
            (step.dir / "data").mkdir(exist_ok=True)
            (step.dir / "data" / "convert.json").write_text(json.dumps({"fingerprint": "c", "describer": "oracle", "description": "oracle-full"}))
        elif step.stage == "train":
            (step.dir / "run.json").write_text(json.dumps({  # each retraining a new result
                "fingerprint": f"{step.run_id}#{self.runs[step.run_id]}", "steps": 2, "epochs": 0.2, "samples": 100, "final_loss": 1.0,
                "tokens": {"text": 1000, "image": 640 if p["mode"] == "image_text" else 0},
                "flops": {"total": 7e9 if p["mode"] == "image_text" else 3e9},
                "wall_seconds": 3.0, "energy": {"seconds": 3.0, "energy_kwh": 1e-5, "energy_mode": "estimate"},
                "peak_memory_mb": {"process_rss": 500.0, "gpu": None}, "trainable_parameters": 5}))
        elif step.stage == "evaluate":
            records = read_jsonl(study.split("wings", "test") / "annotations.jsonl")
            right = {"original": 0, "image_text": 1, "text_only": 2}[p["mode"]]
            predictions = [{"id_": r["id_"], "prediction": r["answer"], "correct": i % 3 < right,
                            "question_type": r["question_type"], "category": r["category"]}
                           for i, r in enumerate(records)]
            (step.dir / "predictions.jsonl").write_text(dumps_jsonl(predictions))
            cell = {"accuracy": 0.5, "low": 0.4, "high": 0.6, "n": len(records)}
            (step.dir / "eval.json").write_text(json.dumps({
                "fingerprint": step.run_id, "questions": len(records),
                "metrics": {"overall": cell, "question_type": {"1": cell, "2": cell}, "category": {"Nymphs": cell}},
                "energy": {"seconds": 1.0, "energy_kwh": 1e-6, "energy_mode": "estimate"},
                "provenance": {"device": {"cpu": "x86_64", "torch_threads": 2}, "git_commit": "abc",
                               "packages": {"textonly": "0.1.0"}}}))
        step.executed.write_text("{}")


@pytest.fixture
def fake_study(tmp_path, worlds, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "worlds").symlink_to(worlds)
    fake = FakeExecutor()
    monkeypatch.setattr(runner, "execute", fake)
    return _config(tmp_path, SMALL), tmp_path, fake


def test_runner_runs_once_then_skips_everything(fake_study):
    config, root, fake = fake_study
    first = run_study(config, "p", root=root, progress=False)
    s = st.load_study(config, "p", root=root)
    assert first.ok and first.executed == list(s.steps) and fake.calls == list(s.steps)
    assert set(first.executed) >= {"worlds", "base/m", "convert/wings-full", "page/06_results"}
    fake.calls.clear()
    again = run_study(config, "p", root=root, progress=False)
    assert again.ok and again.executed == [] and fake.calls == [] and again.skipped == list(s.steps)
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


def test_a_changed_input_reruns_only_what_depends_on_it(fake_study):
    config, root, fake = fake_study
    run_study(config, "p", root=root, progress=False)
    s = st.load_study(config, "p", root=root)
    # someone replaced a finished training run: it, its evaluation and the pages run again
    run = s.steps["train/wings-m-text_only-full-s1"]
    record = json.loads((run.dir / "run.json").read_text())
    (run.dir / "run.json").write_text(json.dumps({**record, "fingerprint": "other"}))
    fake.calls.clear()
    run_study(config, "p", root=root, progress=False)
    assert [c for c in fake.calls if not c.startswith("page/")] == [
        "train/wings-m-text_only-full-s1", "evaluate/wings-m-text_only-full-s1-image-option"]
    # a killed study: the step that was running left no step.json; only it runs again (its
    # own function resumes the work), the rest is skipped
    (s.steps["evaluate/wings-m-original-image-option"].dir / "step.json").unlink()
    fake.calls.clear()
    report = run_study(config, "p", root=root, progress=False)
    assert fake.calls == ["evaluate/wings-m-original-image-option"] and report.ok


def test_a_failing_step_is_named_and_the_others_go_on(fake_study):
    config, root, fake = fake_study
    fake.fail = {"train/wings-m-image_text-s0"}
    report = run_study(config, "p", root=root, progress=False)
    assert not report.ok and list(report.failed) == ["train/wings-m-image_text-s0"]
    assert "notebooks/04_train.ipynb failed (train/wings-m-image_text-s0)" in report.failed[
        "train/wings-m-image_text-s0"] and "boom" in report.failed["train/wings-m-image_text-s0"]
    assert list(report.blocked) == ["evaluate/wings-m-image_text-s0-image-option"]
    assert "evaluate/wings-m-text_only-full-s1-image-option" in report.executed  # the others went on
    assert "page/06_results" in report.executed  # the pages show what finished
    fake.fail = set()
    fake.calls.clear()
    retry = run_study(config, "p", root=root, progress=False)
    assert retry.ok and [c for c in fake.calls if not c.startswith("page/")] == [
        "train/wings-m-image_text-s0", "evaluate/wings-m-image_text-s0-image-option"]


def test_only_runs_a_subset(fake_study):
    config, root, fake = fake_study
    report = run_study(config, "p", root=root, only="worlds", progress=False)
    assert fake.calls == ["worlds"] and report.ok


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
    report = run_study(config, "p", root=tmp_path, only="worlds", progress=False)
    message = report.failed["worlds"]
    assert "notebooks/01_worlds.ipynb failed (worlds, cell [3]): ValueError: no such world" in message
    executed = st.load_study(config, "p", root=tmp_path).steps["worlds"].executed
    assert str(executed) in message and executed.is_file()
    assert json.loads((executed.parent / "step.json").read_text())["status"] == "failed"


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
