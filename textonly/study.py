"""The study runner: a grid of runs from a YAML config, each run a notebook executed by papermill.

A study config (``studies/main.yaml``) names the datasets and base models and, per
*profile* (``smoke``, ``default``, ``full``), the grids of cells: datasets x models x modes
x seeds x conditions (x description levels x scorings). :func:`load_study` expands them
into *steps*, each one execution of a numbered notebook of ``notebooks/`` into its own run
directory:

* ``worlds``: build the synthetic worlds (``01_worlds``);
* ``base/<model>``: pretrain a base model (``02_base_model``);
* ``convert/<dataset>-<level>``: write the training split's text-only twin (``03_convert``);
* ``train/<dataset>-<model>-<mode>[-<level>]-s<seed>``: fine-tune (``04_train``);
* ``evaluate/<...>-<condition>-<scoring>``: score on the test images (``05_evaluate``);
* ``page/<notebook>``: the book's analysis pages, after :func:`collect` has written the
  results tables.

:func:`run_study` executes the steps in that order with a progress bar. A step whose
fingerprint (its settings, the notebook's code, the package's version and source, and
the fingerprints of what its inputs are) matches the ``step.json`` it left last time is
skipped without starting a kernel, so a killed study resumes where it stopped and a
finished one re-runs in seconds. A failing notebook is reported with its path and error;
the steps that do not depend on it go on. Finally the tables and the executed pages are
copied to ``results/``, which the book renders.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


from textonly import __version__
from textonly.config import PROJECT_ROOT, resolve_dataset_path
from textonly.errors import TextonlyError
from textonly.fileio import build_key, dumps_json, read_yaml, write_bytes_atomic, write_text_atomic
from textonly.prompts import CONDITIONS, SCORINGS

MODES = ("original", "image_text", "text_only", "mixed")
#: The notebook each stage executes (under the config's ``notebooks`` folder).
NOTEBOOKS = {"worlds": "01_worlds.ipynb", "base": "02_base_model.ipynb", "convert": "03_convert.ipynb",
             "train": "04_train.ipynb", "evaluate": "05_evaluate.ipynb"}
#: The book's analysis pages, executed after the results are collected.
PAGES = ("06_results.ipynb", "07_breakdowns.ipynb", "08_energy.ipynb", "09_description_quality.ipynb",
         "10_explorer.ipynb", "11_cost.ipynb")
STEP_FILE = "step.json"
EXECUTED = "notebook.ipynb"
GRID_AXES = ("datasets", "models", "modes", "seeds", "levels", "conditions", "scorings")
TABLES = ("results.csv", "summary.csv", "comparisons.csv", "runs.csv")


@dataclass(frozen=True)
class Cell:
    """One evaluated point of the grid. ``seed`` and ``level`` are None where they do not apply
    (``original`` is not trained; ``image_text`` reads no description)."""

    dataset: str
    model: str
    mode: str
    seed: int | None
    level: str | None
    condition: str
    scoring: str

    @property
    def train_id(self) -> str | None:
        if self.mode == "original":
            return None
        level = f"-{self.level}" if self.level else ""
        return f"train/{self.dataset}-{self.model}-{self.mode}{level}-s{self.seed}"

    @property
    def eval_id(self) -> str:
        level = f"-{self.level}" if self.level else ""
        seed = f"-s{self.seed}" if self.seed is not None else ""
        return f"evaluate/{self.dataset}-{self.model}-{self.mode}{level}{seed}-{self.condition}-{self.scoring}"


@dataclass
class Step:
    """One notebook execution: its stage, the notebook's scalar parameters, what determines
    its result (``settings``, hashed), the steps it reads from, and its run directory."""

    stage: str
    run_id: str
    notebook: str
    parameters: dict
    settings: dict
    needs: tuple[str, ...]
    dir: Path

    @property
    def executed(self) -> Path:
        return self.dir / EXECUTED


@dataclass
class Study:
    """A study config with one profile applied: paths, datasets, models, cells and steps."""

    name: str
    profile: str
    config_path: Path
    root: Path
    paths: dict[str, Path]
    notebooks: Path
    worlds: dict
    datasets: dict[str, dict]
    models: dict[str, dict]
    train: dict
    evaluate: dict
    grids: dict[str, dict]
    paper: Path | None
    cells: list[Cell] = field(default_factory=list)
    steps: dict[str, Step] = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        """Where this profile's run directories and tables live."""
        return self.paths["runs"] / f"{self.name}-{self.profile}"

    @property
    def results_dir(self) -> Path:
        """What the book reads: the tables and the executed pages of the last run."""
        return self.paths["results"]

    # --- what the notebooks ask for ---------------------------------------------------

    def step(self, stage: str | None = None, *, run_id: str | None = None, **scalars) -> Step:
        """The step a notebook runs: by ``run_id``, or by its stage and scalars (dataset, model,
        mode, seed, level, condition, scoring); both given must agree."""
        wanted = run_id or _run_id(stage, **scalars)
        if wanted not in self.steps:
            near = [k for k in self.steps if k.split("/")[0] == (stage or wanted.split("/")[0])]
            raise TextonlyError(f"{wanted!r} is not a step of study {self.name!r}, profile {self.profile!r}; "
                                f"its {stage or 'such'} steps: {', '.join(near[:8]) or 'none'}")
        step = self.steps[wanted]
        for key, value in scalars.items():  # None in the step: not applicable (original has no seed)
            if value is not None and step.parameters.get(key) is not None and step.parameters[key] != value:
                raise TextonlyError(f"{wanted}: parameter {key}={value!r} disagrees with the step's "
                                    f"{step.parameters[key]!r}")
        return step

    def world_dir(self, name: str) -> Path:
        return self.paths["worlds"] / name

    def model_path(self, model: str) -> str:
        """A base model's checkpoint folder (pretrained here) or its hub id."""
        spec = self.models[model]
        if "hub" in spec:
            return spec["hub"]
        return str(self.paths["models"] / model_dir_name(spec["pretrain"]))

    def pretrain_config(self, model: str):
        """The :class:`~textonly.pretrain.PretrainConfig` of a model pretrained in the study."""
        from textonly.pretrain import PretrainConfig

        spec = dict(self.models[model]["pretrain"])
        if spec.get("steps") is not None:
            spec["steps"] = tuple(spec["steps"])
        return PretrainConfig(**spec, worlds=str(self.paths["worlds"]))

    def split(self, dataset: str, split: str) -> Path:
        """A dataset's ``train`` or ``test`` folder."""
        spec = self.datasets[dataset]
        if "world" in spec:
            return self.world_dir(spec["world"]) / split
        local = _resolve(spec[split], self.root)
        return local if local.exists() else resolve_dataset_path(spec[split])

    def convert_args(self, step: Step) -> dict:
        """Keyword arguments of :func:`textonly.convert.convert` for a convert step."""
        spec = self.datasets[step.parameters["dataset"]]
        args = {"data": str(self.split(step.parameters["dataset"], "train")), "out": str(step.dir / "data")}
        if "world" in spec:
            return {**args, "describer": "oracle", "level": step.parameters["level"]}
        return {**args, "describer": spec["describer"], "model": spec.get("describer_model")}

    def describer_label(self, convert_step: Step) -> str:
        """The label under which a convert step stored its descriptions (``oracle-full``, ...)."""
        marker = convert_step.dir / "data" / "convert.json"
        if not marker.is_file():
            raise TextonlyError(f"{convert_step.run_id} has not run yet (no {marker}); run the study first")
        return json.loads(marker.read_text())["describer"]

    def train_config(self, step: Step):
        """The :class:`~textonly.train.TrainConfig` of a train step."""
        from textonly.train import TrainConfig

        p = step.parameters
        settings = {**self.train, **self.models[p["model"]].get("train", {})}
        if p["mode"] == "image_text":
            data, describer = self.split(p["dataset"], "train"), settings.pop("describer", "full")
        else:
            convert_step = self.steps[_convert_id(p["dataset"], p["level"])]
            data, describer = convert_step.dir / "data", self.describer_label(convert_step)
            settings.pop("describer", None)
        return TrainConfig(data=str(data), model=self.model_path(p["model"]), mode=p["mode"], seed=p["seed"],
                           describer=describer, **settings)

    def eval_config(self, step: Step):
        """The :class:`~textonly.evaluate.EvalConfig` of an evaluate step."""
        from textonly.evaluate import EvalConfig

        p = step.parameters
        settings = {**self.evaluate, **self.models[p["model"]].get("evaluate", {})}
        if p["condition"] == "description":
            settings["describer"] = p["level"] or settings.get("describer", "full")
        adapter = None
        if p["mode"] != "original":
            adapter = str(self.steps[_run_id("train", **{k: p[k] for k in ("dataset", "model", "mode", "seed",
                                                                         "level")})].dir)
        return EvalConfig(model=self.model_path(p["model"]), data=str(self.split(p["dataset"], "test")),
                          condition=p["condition"], scoring=p["scoring"], adapter=adapter, **settings)


def _convert_id(dataset: str, level: str) -> str:
    return f"convert/{dataset}-{level}"


def _run_id(stage: str | None, *, dataset=None, model=None, mode=None, seed=None, level=None, condition=None,
            scoring=None, page=None) -> str:
    if stage == "worlds":
        return "worlds"
    if stage == "base":
        return f"base/{model}"
    if stage == "convert":
        return _convert_id(dataset, level)
    if stage == "page":
        return f"page/{Path(page).stem}"
    cell = Cell(dataset, model, mode, seed if mode != "original" else None,
                level if mode in ("text_only", "mixed") else None, condition or "image", scoring or "option")
    if stage == "train":
        if cell.train_id is None:
            raise TextonlyError("mode 'original' is not trained: it evaluates the base model itself")
        return cell.train_id
    if stage == "evaluate":
        return cell.eval_id
    raise TextonlyError(f"stage {stage!r}: choose from {', '.join([*NOTEBOOKS, 'page'])}")


def model_dir_name(pretrain: dict) -> str:
    """The checkpoint folder of a pretrained base model: ``base-small-seed0-f1`` as the CLI
    names it, plus ``-steps3-3-3`` for a schedule other than the size's default and
    ``-enc<hash>`` for encoder settings other than the size's default."""
    name = f"base-{pretrain.get('size', 'small')}-seed{pretrain.get('seed', 0)}-f{pretrain.get('image_start_fraction', 1.0):g}"
    if pretrain.get("steps"):
        name += "-steps" + "-".join(str(s) for s in pretrain["steps"])
    if pretrain.get("encoder"):  # an encoder of other settings than the size's shared one
        name += "-enc" + build_key(pretrain["encoder"])[:8]
    return name


# --- loading a config -------------------------------------------------------------------

def _resolve(path: str | os.PathLike, base: Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else base / path


def _as_list(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def load_study(config: str | os.PathLike, profile: str = "default", *, root: str | os.PathLike | None = None) -> Study:
    """Read a study config and apply one profile: the cells of its grids and the steps that make them.

    Relative paths in the config (``paths``, ``notebooks``, ``paper``) are relative to
    ``root`` (default: the project root); a relative ``config`` is looked up there too.
    """
    root = Path(root).resolve() if root else PROJECT_ROOT
    config_path = Path(config)
    if not config_path.is_absolute() and not config_path.is_file():
        config_path = PROJECT_ROOT / config_path
    config_path = config_path.resolve()
    raw = read_yaml(config_path)
    where = str(config_path)
    if not isinstance(raw, dict):
        raise TextonlyError(f"{where}: a study config is a mapping (name, datasets, models, profiles)")
    profiles = raw.get("profiles") or {}
    if profile not in profiles:
        raise TextonlyError(f"{where}: no profile {profile!r}; it has {', '.join(profiles) or 'none'}")
    chosen = profiles[profile] or {}
    paths = {k: _resolve(v, root) for k, v in {"worlds": "data/worlds", "models": "data/models",
                                               "runs": "data/study", "results": "results",
                                               **(raw.get("paths") or {})}.items()}
    datasets, models = raw.get("datasets") or {}, raw.get("models") or {}
    for name, spec in datasets.items():
        if not isinstance(spec, dict) or not ("world" in spec or {"train", "test"} <= set(spec)):
            raise TextonlyError(f"{where}: dataset {name!r} needs 'world: NAME' or 'train:' and 'test:' folders")
        if "world" not in spec and spec.get("describer") not in ("captioner", "openai"):
            raise TextonlyError(f"{where}: dataset {name!r} needs 'describer: captioner|openai' (oracle "
                                "descriptions exist only in the synthetic worlds)")
    for name, spec in models.items():
        if not isinstance(spec, dict) or ("pretrain" in spec) == ("hub" in spec):
            raise TextonlyError(f"{where}: model {name!r} needs exactly one of 'pretrain: {{size: ...}}' or 'hub: ID'")
    grids = chosen.get("grids") or {}
    if not grids:
        raise TextonlyError(f"{where}: profile {profile!r} has no grids")
    study = Study(
        name=str(raw.get("name") or config_path.stem), profile=profile, config_path=config_path, root=root,
        paths=paths, notebooks=_resolve(raw.get("notebooks", "notebooks"), PROJECT_ROOT),
        worlds={"seed": 0, "image_size": 64, **(raw.get("worlds") or {}), **(chosen.get("worlds") or {})},
        datasets=datasets, models=models, train=dict(chosen.get("train") or {}),
        evaluate=dict(chosen.get("evaluate") or {}), grids=grids,
        paper=_resolve(raw["paper"], PROJECT_ROOT) if raw.get("paper") else None)
    study.cells = expand_grids(study, where)
    study.steps = plan_steps(study)
    return study


def expand_grids(study: Study, where: str = "config") -> list[Cell]:
    """The cells of a profile's grids, in order, each once."""
    cells: dict[Cell, None] = {}
    for gname, grid in study.grids.items():
        unknown = set(grid) - set(GRID_AXES)
        if unknown:
            raise TextonlyError(f"{where}: grid {gname!r}: unknown axis {', '.join(sorted(unknown))} "
                                f"(axes: {', '.join(GRID_AXES)})")
        axes = {a: _as_list(grid.get(a)) for a in GRID_AXES}
        for axis, default in (("seeds", [0]), ("levels", ["full"]), ("conditions", ["image"]),
                              ("scorings", ["option"])):
            axes[axis] = axes[axis] or default
        for axis in ("datasets", "models", "modes"):
            if not axes[axis]:
                raise TextonlyError(f"{where}: grid {gname!r} lists no {axis}")
        for dataset, model, mode, seed, level, condition, scoring in itertools.product(
                *(axes[a] for a in GRID_AXES)):
            _check_cell(study, where, gname, dataset, model, mode, seed, condition, scoring)
            spec = study.datasets[dataset]
            if "world" not in spec:
                level = spec["describer"]
            elif level not in _levels():
                raise TextonlyError(f"{where}: grid {gname!r}: level {level!r}: choose from {', '.join(_levels())}")
            cell = Cell(dataset, model, mode, int(seed) if mode != "original" else None,
                        level if mode in ("text_only", "mixed") else None, condition, scoring)
            cells[cell] = None
    return list(cells)


def _levels() -> tuple[str, ...]:
    from textonly.worlds.text import QUALITIES

    return tuple(QUALITIES)


def _check_cell(study, where, gname, dataset, model, mode, seed, condition, scoring) -> None:
    for value, known, what in ((dataset, study.datasets, "dataset"), (model, study.models, "model"),
                               (mode, MODES, "mode"), (condition, CONDITIONS, "condition"),
                               (scoring, SCORINGS, "scoring")):
        if value not in known:
            raise TextonlyError(f"{where}: grid {gname!r}: {what} {value!r}: choose from {', '.join(known)}")
    if not isinstance(seed, int):
        raise TextonlyError(f"{where}: grid {gname!r}: seed {seed!r} is not an integer")
    if condition == "description" and "world" not in study.datasets[dataset]:
        raise TextonlyError(f"{where}: grid {gname!r}: condition 'description' needs descriptions of the test "
                            f"images, which only the synthetic worlds carry (dataset {dataset!r})")


def plan_steps(study: Study) -> dict[str, Step]:
    """Every step the cells need, upstream first: worlds, base models, conversions, training,
    evaluation, then the book's pages."""
    steps: dict[str, Step] = {}

    def add(stage, run_id, parameters, settings, needs, notebook=None):
        if run_id not in steps:
            steps[run_id] = Step(stage, run_id, notebook or NOTEBOOKS[stage], parameters, settings,
                                 tuple(n for n in needs if n), study.dir / run_id)
        return run_id

    used = {c.dataset for c in study.cells}
    worlds = sorted({study.datasets[d]["world"] for d in used if "world" in study.datasets[d]})
    worlds_id = add("worlds", "worlds", {}, {"worlds": worlds, **study.worlds}, ()) if worlds else None
    bases = {}
    for model in dict.fromkeys(c.model for c in study.cells):
        spec = study.models[model]
        if "pretrain" in spec:
            bases[model] = add("base", f"base/{model}", {"model": model}, {"pretrain": spec["pretrain"]},
                               (worlds_id,))
    for c in study.cells:
        world_need = worlds_id if "world" in study.datasets[c.dataset] else None
        data = {"dataset": c.dataset, "spec": study.datasets[c.dataset]}
        needs = [world_need, bases.get(c.model)]
        if c.mode in ("text_only", "mixed"):
            needs.append(add("convert", _convert_id(c.dataset, c.level), {"dataset": c.dataset, "level": c.level},
                             {**data, "level": c.level}, (world_need,)))
        model = {"model": c.model, "model_spec": study.models[c.model]}
        if c.train_id:
            train = {**study.train, **study.models[c.model].get("train", {})}
            needs = [add("train", c.train_id, {"dataset": c.dataset, "model": c.model, "mode": c.mode,
                                               "seed": c.seed, "level": c.level},
                         {**data, **model, "mode": c.mode, "seed": c.seed, "level": c.level, "train": train},
                         needs)]
        evaluate = {**study.evaluate, **study.models[c.model].get("evaluate", {})}
        add("evaluate", c.eval_id, {"dataset": c.dataset, "model": c.model, "mode": c.mode, "seed": c.seed,
                                    "level": c.level, "condition": c.condition, "scoring": c.scoring},
            {**data, **model, "mode": c.mode, "seed": c.seed, "level": c.level, "condition": c.condition,
             "scoring": c.scoring, "evaluate": evaluate}, needs)
    for page in PAGES:
        add("page", f"page/{Path(page).stem}", {}, {"page": page}, (), notebook=page)
    return steps


# --- fingerprints -----------------------------------------------------------------------

def package_fingerprint() -> str:
    """The package's version and a hash of its source (any code change re-runs the notebooks;
    the functions they call skip their own work when their inputs are unchanged)."""
    digest = hashlib.sha256(__version__.encode())
    package = Path(__file__).parent
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


def step_outputs(study: Study, step: Step) -> dict | None:
    """The fingerprints recorded by what a step produced (None if any is missing): what
    downstream steps depend on, and what tells that nobody replaced them since."""

    def marker(path: Path) -> str | None:
        try:
            return json.loads(path.read_text())["fingerprint"]
        except (OSError, ValueError, KeyError):
            return None

    p = step.parameters
    if step.stage == "worlds":
        out = {w: marker(study.world_dir(w) / "world.json") for w in step.settings["worlds"]}
    elif step.stage == "base":
        out = {p["model"]: marker(Path(study.model_path(p["model"])) / "pretrain_config.json")}
    elif step.stage == "convert":
        out = {"convert": marker(step.dir / "data" / "convert.json")}
    elif step.stage == "train":
        out = {"run": marker(step.dir / "run.json")}
    elif step.stage == "evaluate":
        out = {"eval": marker(step.dir / "eval.json")}
    else:
        out = {}
    if not step.executed.is_file():
        return None
    return None if any(v is None for v in out.values()) else out


def step_fingerprint(study: Study, step: Step, upstream: dict[str, dict], package: str,
                     extra: str = "") -> str:
    """Hash of what determines a step's result: its settings, its notebook's code, the
    package, and the outputs of the steps it reads (``extra``: the tables a page reads)."""
    inputs = [json.dumps(upstream[n], sort_keys=True) for n in step.needs]
    return build_key({"stage": step.stage, "settings": step.settings}, package,
                     notebook_fingerprint(study.notebooks / step.notebook), *inputs, extra)


# --- running ----------------------------------------------------------------------------

def _kernel_manager(log_path: Path):
    """A kernel manager whose kernel writes its own stderr (not the notebook's) to a log file,
    runs in this Python, and leaves the matplotlib backend to the kernel (inline figures)."""
    from jupyter_client.manager import AsyncKernelManager

    class Manager(AsyncKernelManager):
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


def clear_stale_training(study: Study, step: Step) -> bool:
    """Empty a train step's run directory that holds a run (finished or killed) of another
    training config than the step's now, e.g. after a change to the training code: ``train``
    refuses to mix runs, and the runner owns this directory. A killed run of the same config
    stays, to be resumed. True when something was removed."""
    from textonly.train import RUN_FILE, fingerprint

    key = fingerprint(study.train_config(step).resolved())
    for marker in (RUN_FILE, "run_started.json"):
        try:
            recorded = json.loads((step.dir / marker).read_text())["fingerprint"]
        except (OSError, ValueError, KeyError):
            continue
        if recorded != key:
            for path in step.dir.iterdir():
                if path.name not in (EXECUTED, STEP_FILE):
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
            return True
    return False


def execute(study: Study, step: Step) -> None:
    """Execute a step's notebook with papermill into its run directory (raises on failure)."""
    import papermill

    step.dir.mkdir(parents=True, exist_ok=True)
    if step.stage == "train":
        clear_stale_training(study, step)
    parameters = {"config": str(study.config_path), "profile": study.profile, "root": str(study.root),
                  "run_id": step.run_id, **step.parameters}
    papermill.execute_notebook(
        str(study.notebooks / step.notebook), str(step.executed), parameters=parameters, kernel_name="python3",
        progress_bar=False, cwd=str(step.dir), kernel_manager_class=_kernel_manager(step.dir / "kernel.log"))


def _failure(step: Step, exc: BaseException) -> str:
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        what = f"{exc.ename}: {exc.evalue}".strip()
        cell = f", cell [{exc.exec_count}]"
    else:
        what, cell = f"{type(exc).__name__}: {exc}".strip(), ""
    return f"notebooks/{step.notebook} failed ({step.run_id}{cell}): {what}; see {step.executed}"


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

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked

    def summary(self) -> str:
        parts = [f"{len(self.skipped)} up to date",
                 f"{len(self.executed)} {'to execute' if self.dry_run else 'executed'}"]
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        if self.blocked:
            parts.append(f"{len(self.blocked)} not run (an input failed)")
        return ", ".join(parts) + f" in {self.seconds:.1f} s"


def run_study(config: str | os.PathLike, profile: str = "default", *, root: str | os.PathLike | None = None,
              only: str | None = None, force: bool = False, dry_run: bool = False,
              progress: bool = True) -> Report:
    """Run a study profile: every step not up to date, then the tables, the pages and ``results/``.

    ``only``: run just the steps whose run id contains this text (and nothing after them);
    ``force``: execute even up-to-date steps; ``dry_run``: report what would run.
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    study = load_study(config, profile, root=root)
    package = package_fingerprint()
    report = Report(dry_run=dry_run)
    write_if_changed(study.dir / "study.json", dumps_json(study_record(study)))
    upstream: dict[str, dict] = {}
    work = [s for s in study.steps.values() if s.stage != "page"]
    pages = [s for s in study.steps.values() if s.stage == "page"]
    if only:
        work, pages = [s for s in work if only in s.run_id], [s for s in pages if only in s.run_id]
    bar = tqdm(total=len(work) + len(pages), desc=f"{study.name}/{profile}", unit="step", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)

    def attempt(step: Step, extra: str = "") -> None:
        bar.set_postfix_str(step.run_id, refresh=True)
        missing = [n for n in step.needs if n not in upstream]
        for n in step.needs:
            if n not in upstream and n not in report.failed and n not in report.blocked:
                # not part of this run (``only``): its previous outputs stand in, if there
                previous = _recorded(study, study.steps[n])
                if previous is not None:
                    upstream[n] = previous
                    missing.remove(n)
        if missing:
            report.blocked[step.run_id] = f"needs {', '.join(missing)}"
            bar.update()
            return
        key = step_fingerprint(study, step, upstream, package, extra)
        if not force and _up_to_date(study, step, key):
            upstream[step.run_id] = step_outputs(study, step) or {}
            report.skipped.append(step.run_id)
            bar.update()
            return
        if dry_run:  # what depends on it would run too
            upstream[step.run_id] = {"dry_run": step.run_id}
            report.executed.append(step.run_id)
            bar.update()
            return
        try:
            previous = json.loads((step.dir / STEP_FILE).read_text())
        except (OSError, ValueError):
            previous = {}
        began = time.perf_counter()
        try:
            execute(study, step)
            outputs = step_outputs(study, step)
            if outputs is None:
                raise TextonlyError("the notebook finished but left no finished result in its run directory")
        except Exception as exc:  # noqa: BLE001 - reported by name, the other steps go on
            message = _failure(step, exc)
            report.failed[step.run_id] = message
            write_text_atomic(step.dir / STEP_FILE, dumps_json(
                {"run_id": step.run_id, "status": "failed", "fingerprint": key, "error": message}))
            bar.write(f"FAILED {message}")
            bar.update()
            return
        upstream[step.run_id] = outputs
        seconds = round(time.perf_counter() - began, 2)
        # the time it took to make these outputs: a re-execution that found them made (the
        # function skipped its work) keeps the time of the execution that made them
        made = previous.get("made_seconds", previous.get("seconds")) if previous.get("outputs") == outputs else None
        write_text_atomic(step.dir / STEP_FILE, dumps_json({
            "run_id": step.run_id, "status": "done", "fingerprint": key, "outputs": outputs,
            "notebook": f"notebooks/{step.notebook}", "parameters": step.parameters,
            "seconds": seconds, "made_seconds": made if made is not None else seconds, "package": package}))
        report.executed.append(step.run_id)
        bar.update()

    for step in work:
        attempt(step)
    if not dry_run:
        evaluated = {k: v for k, v in upstream.items() if k.startswith("evaluate/")}
        collect(study, build_key(evaluated, package))
    tables = tables_fingerprint(study) + measured_fingerprint()
    for step in pages:
        attempt(step, extra=tables)
    bar.close()
    if not dry_run:
        report.results = publish(study)
    report.seconds = time.perf_counter() - start
    return report


def measured_fingerprint() -> str:
    """Hash of the committed measured files (``book/measured/``) that the cost page reads."""
    from textonly.cost_report import MEASURED

    files = sorted(MEASURED.glob("*")) if MEASURED.is_dir() else []
    return build_key([f.name for f in files if f.is_file()], *[f.read_bytes() for f in files if f.is_file()])


def _recorded(study: Study, step: Step) -> dict | None:
    """The outputs a step recorded when it last finished, if they are still there unchanged."""
    try:
        record = json.loads((step.dir / STEP_FILE).read_text())
    except (OSError, ValueError):
        return None
    if record.get("status") != "done":
        return None
    outputs = step_outputs(study, step)
    return outputs if outputs is not None and outputs == record.get("outputs") else None


def _up_to_date(study: Study, step: Step, key: str) -> bool:
    try:
        record = json.loads((step.dir / STEP_FILE).read_text())
    except (OSError, ValueError):
        return False
    return record.get("status") == "done" and record.get("fingerprint") == key and \
        _recorded(study, step) is not None


def study_record(study: Study) -> dict:
    """The resolved study, written next to its runs (what the notebooks were given)."""
    return {"name": study.name, "profile": study.profile, "config": str(study.config_path),
            "root": str(study.root), "paths": {k: str(v) for k, v in study.paths.items()},
            "datasets": study.datasets, "models": study.models, "train": study.train,
            "evaluate": study.evaluate, "grids": study.grids, "cells": [asdict(c) for c in study.cells],
            "steps": {k: {"notebook": s.notebook, "parameters": s.parameters, "needs": list(s.needs)}
                      for k, s in study.steps.items()}}


def write_if_changed(path: Path, data: str | bytes) -> bool:
    """Write only when the content differs (so that unchanged files keep their times and
    the book's incremental build reads nothing again); True when written."""
    data = data.encode("utf-8") if isinstance(data, str) else data
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    write_bytes_atomic(path, data)
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)  # a temporary file's 0600 would keep a served book from reading it
    return True


# --- results ------------------------------------------------------------------------------

def collect(study: Study, key: str = "") -> dict[str, Path]:
    """Gather every finished evaluation of the profile into the tidy tables (see
    :func:`textonly.results.tables`), written to the study folder only when they change.
    ``key`` (a hash of the evaluations' outputs and the package) lets an unchanged
    collection be skipped."""
    paths = {name: study.dir / name for name in TABLES}
    marker = study.dir / "tables.json"
    if key and all(p.is_file() for p in paths.values()):
        try:
            if json.loads(marker.read_text())["fingerprint"] == key:
                return paths
        except (OSError, ValueError, KeyError):
            pass
    from textonly.results import tables

    for name, frame in tables(study).items():
        write_if_changed(paths[name], frame.to_csv(index=False, float_format="%.6g", lineterminator="\n"))
    if key:
        write_if_changed(marker, dumps_json({"fingerprint": key}))
    return paths


def tables_fingerprint(study: Study) -> str:
    digest = hashlib.sha256()
    for name in TABLES:
        path = study.dir / name
        digest.update(path.read_bytes() if path.is_file() else b"-")
    return digest.hexdigest()[:16]


def publish(study: Study) -> Path:
    """Copy the tables and the executed pages (the worlds, the first base model, the analysis
    pages) into the results folder the book reads; unchanged files are left untouched."""
    out = study.results_dir
    pages = out / "pages"
    pages.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        if (study.dir / name).is_file():
            write_if_changed(out / name, (study.dir / name).read_bytes())
    shown = [s for s in study.steps.values() if s.stage in ("worlds", "page")]
    base = next((s for s in study.steps.values() if s.stage == "base"), None)
    if base is not None:
        shown.insert(1, base)
    for step in shown:
        if step.executed.is_file() and _recorded(study, step) is not None:
            write_if_changed(pages / step.notebook, step.executed.read_bytes())
    write_if_changed(out / "study.json", dumps_json({"name": study.name, "profile": study.profile,
                                                     "config": str(study.config_path), "runs": str(study.dir)}))
    return out
