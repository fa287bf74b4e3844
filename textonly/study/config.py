"""A study config: a grid of runs from a YAML file, each run a notebook executed by papermill.

A study config (``studies/main.yaml``) names the datasets and base models and, per
*profile* (``smoke``, ``default``, ``full``), the grids of cells: datasets x models x modes
x seeds x conditions (x description qualities x scorings). :func:`load_study` expands them
into *steps*, each one execution of a numbered notebook of ``notebooks/`` into its own run
directory:

* ``worlds``: build the synthetic worlds (``01_worlds``);
* ``split/<dataset>``: a real dataset's training and test splits, for a dataset given as
  ``split: {kind, source, ...}`` (``00_split``; :func:`textonly.data.splits.make_split`);
* ``base/<model>``: pretrain a base model (``02_base_model``);
* ``convert/<dataset>-<quality>``: write the training split's text-only twin (``03_convert``);
* ``train/<dataset>-<model>-<mode>[-<quality>]-s<seed>``: fine-tune (``04_train``);
* ``evaluate/<...>-<condition>-<scoring>``: score on the test images (``05_evaluate``);
* ``page/<notebook>``: the book's analysis pages, after :func:`textonly.study.collect.collect` has written the
  results tables.

:mod:`textonly.study.engine` runs the steps on Snakemake (``workflow/Snakefile``), each one job: a
step runs again only when its settings, its notebook's cells, the package's source or a step it
reads from changed, so a killed study resumes where it stopped and a finished one re-runs in
seconds. A failing notebook is reported with its path, cell and error; the steps that do not
depend on it go on. Finally the tables and the executed pages are copied to ``results/``, which
the book renders.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from textonly.core.config import DATA_ROOT_ENV, PROJECT_ROOT, data_root, resolve_dataset_path
from textonly.core.errors import TextonlyError
from textonly.core.fileio import (atomic_directory, build_key, dumps_json, finished_build, module_sources, read_yaml,
                                  write_text_atomic)
from textonly.organism.worlds.text import oracle_description
from textonly.study.plan import Cell, Step, _convert_id, expand_grids, plan_steps, step_id

#: What a model of a study config is: pretrained here (a ``PretrainConfig``'s fields), a hub id, or
#: a tiny random model of a hub architecture (``llava_next``, ``qwen2_vl``: a smoke run on CPU).
MODEL_KINDS = ("pretrain", "hub", "tiny")
TINY_MARKER = "tiny.json"


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
        """A base model's checkpoint folder (pretrained here, or a tiny random model built here on
        first use, in seconds) or its hub id."""
        spec = self.models[model]
        if "hub" in spec:
            return spec["hub"]
        if "tiny" in spec:
            return str(tiny_model(spec["tiny"], self.paths["models"], seed=spec.get("seed", 0)))
        return str(self.paths["models"] / model_dir_name(spec["pretrain"]))

    def pretrain_config(self, model: str):
        """The :class:`~textonly.organism.pretrain.PretrainConfig` of a model pretrained in the study."""
        from textonly.organism.pretrain import PretrainConfig

        spec = dict(self.models[model]["pretrain"])
        if spec.get("steps") is not None:
            spec["steps"] = tuple(spec["steps"])
        return PretrainConfig(**spec, worlds=str(self.paths["worlds"]))

    def split(self, dataset: str, split: str) -> Path:
        """A dataset's ``train`` or ``test`` folder (for a ``split:`` dataset, where its split step writes it)."""
        spec = self.datasets[dataset]
        if "world" in spec:
            return self.world_dir(spec["world"]) / split
        if "split" in spec:
            return self.dir / step_id("split", dataset=dataset) / "data" / split
        return self._source(spec[split])

    def _source(self, name: str | os.PathLike) -> Path:
        """A folder the config names: relative to the root, else a name under the data root."""
        local = _resolve(name, self.root)
        return local if local.exists() else resolve_dataset_path(name)

    def split_args(self, step: Step) -> dict:
        """Keyword arguments of :func:`textonly.data.splits.make_split` for a split step."""
        settings = dict(self.datasets[step.parameters["dataset"]]["split"])
        source = self._source(settings.pop("source"))
        if not source.exists():
            raise TextonlyError(f"{step.run_id}: source {source} not found (nor under the data root {data_root()}; "
                                f"set {DATA_ROOT_ENV} to the folder that holds it)")
        return {"kind": settings.pop("kind"), "source": str(source), "out": str(step.dir / "data"), **settings}

    def convert_args(self, step: Step) -> dict:
        """Keyword arguments of :func:`textonly.pipeline.convert.convert` for a convert step."""
        spec = self.datasets[step.parameters["dataset"]]
        args = {"data": str(self.split(step.parameters["dataset"], "train")), "out": str(step.dir / "data")}
        if "world" in spec:
            return {**args, "describer": "oracle", "quality": step.parameters["quality"]}
        model = spec.get("describer_model")
        if model in self.models:  # a model of the study describes the images (e.g. a tiny one in a smoke run)
            model = self.model_path(model)
        return {**args, "describer": spec["describer"], "model": model}

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


def tiny_model(arch: str, folder: str | os.PathLike, *, seed: int = 0) -> Path:
    """A tiny random model of a hub architecture (:func:`textonly.models.hub.build_tiny`) in
    ``folder/tiny-<arch>-seed<seed>``, built once: again only when the code that builds it changes."""
    from textonly.models import hub

    out = Path(folder) / f"tiny-{arch}-seed{seed}"
    key = build_key({"arch": arch, "seed": seed}, *module_sources(hub))
    if not finished_build(out / TINY_MARKER, key):
        with atomic_directory(out) as tmp:
            hub.build_tiny(arch, tmp, seed=seed)
            write_text_atomic(tmp / TINY_MARKER, dumps_json({"arch": arch, "seed": seed, "fingerprint": key}))
    return out


def _resolve(path: str | os.PathLike, base: Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else base / path


def _check_dataset(where: str, name: str, spec) -> None:
    kinds = [k for k in ("world", "split", "train") if isinstance(spec, dict) and k in spec]
    if len(kinds) != 1 or (kinds == ["train"] and "test" not in spec):
        raise TextonlyError(f"{where}: dataset {name!r} needs one of 'world: NAME', 'split: {{kind: ..., source: "
                            "...}' (made by the study, as `data split` makes it) or 'train:' and 'test:' folders")
    if "world" not in spec and spec.get("describer") not in ("captioner", "openai"):
        raise TextonlyError(f"{where}: dataset {name!r} needs 'describer: captioner|openai' (oracle "
                            "descriptions exist only in the synthetic worlds)")
    if "split" in spec:
        from textonly.data.splits import split_options

        split = spec["split"]
        if not isinstance(split, dict) or not {"kind", "source"} <= set(split):
            raise TextonlyError(f"{where}: dataset {name!r}: 'split' needs 'kind' and 'source'")
        unknown = sorted(set(split) - {"kind", "source", *split_options(split["kind"])})
        if unknown:
            raise TextonlyError(f"{where}: dataset {name!r}: split {split['kind']!r} takes no {', '.join(unknown)} "
                                f"(it takes: {', '.join(split_options(split['kind'])) or 'nothing'})")


def _check_model(where: str, name: str, spec) -> None:
    from textonly.models.hub import ARCHS

    if not isinstance(spec, dict) or sum(k in spec for k in MODEL_KINDS) != 1:
        raise TextonlyError(f"{where}: model {name!r} needs exactly one of 'pretrain: {{size: ...}}', 'hub: ID' "
                            "or 'tiny: ARCH'")
    if "tiny" in spec and spec["tiny"] not in ARCHS:
        raise TextonlyError(f"{where}: model {name!r}: tiny {spec['tiny']!r}: choose from {', '.join(ARCHS)}")


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
        _check_dataset(where, name, spec)
    for name, spec in models.items():
        _check_model(where, name, spec)
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
