"""A study config: a grid of runs from a YAML file, each run a notebook executed by papermill.

A study config (``studies/main.yaml``) names the datasets and base models and, per
*profile* (``smoke``, ``default``, ``full``), the grids of cells: datasets x models x modes
x seeds x conditions (x description qualities x scorings). :func:`load_study` expands them
into *steps*, each one execution of a numbered notebook of ``notebooks/`` into its own run
directory:

* ``worlds``: build the synthetic worlds (``01_worlds``);
* ``base/<model>``: pretrain a base model (``02_base_model``);
* ``convert/<dataset>-<quality>``: write the training split's text-only twin (``03_convert``);
* ``train/<dataset>-<model>-<mode>[-<quality>]-s<seed>``: fine-tune (``04_train``);
* ``evaluate/<...>-<condition>-<scoring>``: score on the test images (``05_evaluate``);
* ``page/<notebook>``: the book's analysis pages, after :func:`textonly.study.collect.collect` has written the
  results tables.

:func:`textonly.study.runner.run_study` executes the steps in that order with a progress bar. A step whose
fingerprint (its settings, the notebook's code, the package's version and source, and
the fingerprints of what its inputs are) matches the ``step.json`` it left last time is
skipped without starting a kernel, so a killed study resumes where it stopped and a
finished one re-runs in seconds. A failing notebook is reported with its path and error;
the steps that do not depend on it go on. Finally the tables and the executed pages are
copied to ``results/``, which the book renders.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from textonly.core.config import PROJECT_ROOT, resolve_dataset_path
from textonly.core.errors import TextonlyError
from textonly.core.fileio import build_key, read_yaml
from textonly.organism.worlds.text import oracle_description
from textonly.study.plan import Cell, Step, _convert_id, expand_grids, plan_steps, step_id


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
        mode, seed, quality, condition, scoring); both given must agree."""
        wanted = run_id or step_id(stage, **scalars)
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
        """The :class:`~textonly.organism.pretrain.PretrainConfig` of a model pretrained in the study."""
        from textonly.organism.pretrain import PretrainConfig

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
        """Keyword arguments of :func:`textonly.pipeline.convert.convert` for a convert step."""
        spec = self.datasets[step.parameters["dataset"]]
        args = {"data": str(self.split(step.parameters["dataset"], "train")), "out": str(step.dir / "data")}
        if "world" in spec:
            return {**args, "describer": "oracle", "quality": step.parameters["quality"]}
        return {**args, "describer": spec["describer"], "model": spec.get("describer_model")}

    def description(self, convert_step: Step) -> str:
        """The description a convert step wrote: its name in the records' ``descriptions``
        (``oracle-full``, ``captioner-<model>``, ...)."""
        marker = convert_step.dir / "data" / "convert.json"
        if not marker.is_file():
            raise TextonlyError(f"{convert_step.run_id} has not run yet (no {marker}); run the study first")
        return json.loads(marker.read_text())["description"]

    def train_config(self, step: Step):
        """The :class:`~textonly.pipeline.train.TrainConfig` of a train step."""
        from textonly.pipeline.train import TrainConfig

        p = step.parameters
        settings = {**self.train, **self.models[p["model"]].get("train", {})}
        if p["mode"] == "image_text":
            data, description = self.split(p["dataset"], "train"), settings.pop("description", None)
        else:
            convert_step = self.steps[_convert_id(p["dataset"], p["quality"])]
            data, description = convert_step.dir / "data", self.description(convert_step)
            settings.pop("description", None)
        return TrainConfig(data=str(data), model=self.model_path(p["model"]), mode=p["mode"], seed=p["seed"],
                           description=description or TrainConfig.description, **settings)

    def eval_config(self, step: Step):
        """The :class:`~textonly.pipeline.evaluate.EvalConfig` of an evaluate step."""
        from textonly.pipeline.evaluate import EvalConfig

        p = step.parameters
        settings = {**self.evaluate, **self.models[p["model"]].get("evaluate", {})}
        if p["condition"] == "description" and p["quality"]:
            settings["description"] = oracle_description(p["quality"])
        adapter = None
        if p["mode"] != "original":
            adapter = str(self.steps[step_id("train", **{k: p[k] for k in ("dataset", "model", "mode", "seed",
                                                                         "quality")})].dir)
        return EvalConfig(model=self.model_path(p["model"]), data=str(self.split(p["dataset"], "test")),
                          condition=p["condition"], scoring=p["scoring"], adapter=adapter, **settings)


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


def _resolve(path: str | os.PathLike, base: Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else base / path


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
