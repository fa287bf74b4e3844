"""The steps of a study: the cells of its grids (datasets x models x modes x seeds x
description qualities x conditions x scorings) and the notebook executions that make them."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from textonly.core.errors import TextonlyError
from textonly.core.prompts import CONDITIONS, MODES, SCORINGS

if TYPE_CHECKING:
    from textonly.study.config import Study




#: The notebook each stage executes (under the config's ``notebooks`` folder).
NOTEBOOKS = {"split": "00_split.ipynb", "worlds": "01_worlds.ipynb", "base": "02_base_model.ipynb",
             "convert": "03_convert.ipynb", "train": "04_train.ipynb", "evaluate": "05_evaluate.ipynb"}


#: The book's analysis pages, executed after the results are collected.
PAGES = ("06_results.ipynb", "07_breakdowns.ipynb", "08_energy.ipynb", "09_description_quality.ipynb",
         "10_explorer.ipynb", "11_cost.ipynb")


STEP_FILE = "step.json"


EXECUTED = "notebook.ipynb"


GRID_AXES = ("datasets", "models", "modes", "seeds", "qualities", "conditions", "scorings")


@dataclass(frozen=True)
class Cell:
    """One evaluated point of the grid. ``seed`` and ``quality`` (the oracle's description quality)
    are None where they do not apply (``original`` is not trained; ``image_text`` reads no
    description; a real dataset's descriptions come from its describer, not the oracle)."""

    dataset: str
    model: str
    mode: str
    seed: int | None
    quality: str | None
    condition: str
    scoring: str

    @property
    def train_id(self) -> str | None:
        if self.mode == "original":
            return None
        quality = f"-{self.quality}" if self.quality else ""
        return f"train/{self.dataset}-{self.model}-{self.mode}{quality}-s{self.seed}"

    @property
    def eval_id(self) -> str:
        quality = f"-{self.quality}" if self.quality else ""
        seed = f"-s{self.seed}" if self.seed is not None else ""
        return f"evaluate/{self.dataset}-{self.model}-{self.mode}{quality}{seed}-{self.condition}-{self.scoring}"


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


def _convert_id(dataset: str, quality: str | None) -> str:
    return f"convert/{dataset}" + (f"-{quality}" if quality else "")


def step_id(stage: str | None, *, dataset=None, model=None, mode=None, seed=None, quality=None, condition=None,
            scoring=None, page=None) -> str:
    if stage == "worlds":
        return "worlds"
    if stage == "split":
        return f"split/{dataset}"
    if stage == "base":
        return f"base/{model}"
    if stage == "convert":
        return _convert_id(dataset, quality)
    if stage == "page":
        return f"page/{Path(page).stem}"
    cell = Cell(dataset, model, mode, seed if mode != "original" else None,
                quality if mode in ("text_only", "mixed") else None, condition or "image", scoring or "option")
    if stage == "train":
        if cell.train_id is None:
            raise TextonlyError("mode 'original' is not trained: it evaluates the base model itself")
        return cell.train_id
    if stage == "evaluate":
        return cell.eval_id
    raise TextonlyError(f"stage {stage!r}: choose from {', '.join([*NOTEBOOKS, 'page'])}")


def _as_list(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def expand_grids(study: Study, where: str = "config") -> list[Cell]:
    """The cells of a profile's grids, in order, each once."""
    cells: dict[Cell, None] = {}
    for gname, grid in study.grids.items():
        unknown = set(grid) - set(GRID_AXES)
        if unknown:
            raise TextonlyError(f"{where}: grid {gname!r}: unknown axis {', '.join(sorted(unknown))} "
                                f"(axes: {', '.join(GRID_AXES)})")
        axes = {a: _as_list(grid.get(a)) for a in GRID_AXES}
        for axis, default in (("seeds", [0]), ("qualities", ["full"]), ("conditions", ["image"]),
                              ("scorings", ["option"])):
            axes[axis] = axes[axis] or default
        for axis in ("datasets", "models", "modes"):
            if not axes[axis]:
                raise TextonlyError(f"{where}: grid {gname!r} lists no {axis}")
        for dataset, model, mode, seed, quality, condition, scoring in itertools.product(
                *(axes[a] for a in GRID_AXES)):
            _check_cell(study, where, gname, dataset, model, mode, seed, condition, scoring)
            spec = study.datasets[dataset]
            if "world" not in spec:
                quality = None  # real data: the dataset's describer writes its descriptions
            elif quality not in _qualities():
                raise TextonlyError(f"{where}: grid {gname!r}: quality {quality!r}: choose from {', '.join(_qualities())}")
            cell = Cell(dataset, model, mode, int(seed) if mode != "original" else None,
                        quality if mode in ("text_only", "mixed") else None, condition, scoring)
            cells[cell] = None
    return list(cells)


def _qualities() -> tuple[str, ...]:
    from textonly.organism.worlds.text import QUALITIES

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
    """Every step the cells need, upstream first: worlds, real datasets' splits, base models,
    conversions, training, evaluation, then the book's pages."""
    steps: dict[str, Step] = {}

    def add(stage, run_id, parameters, settings, needs, notebook=None):
        if run_id not in steps:
            steps[run_id] = Step(stage, run_id, notebook or NOTEBOOKS[stage], parameters, settings,
                                 tuple(n for n in needs if n), study.dir / run_id)
        return run_id

    used = [d for d in study.datasets if d in {c.dataset for c in study.cells}]
    worlds = sorted({study.datasets[d]["world"] for d in used if "world" in study.datasets[d]})
    worlds_id = add("worlds", "worlds", {}, {"worlds": worlds, **study.worlds}, ()) if worlds else None
    splits = {d: add("split", step_id("split", dataset=d), {"dataset": d}, {"split": study.datasets[d]["split"]}, ())
              for d in used if "split" in study.datasets[d]}
    # a model of the study may describe a real dataset's images (the captioner)
    describers = {d: study.datasets[d].get("describer_model") for d in used}
    bases = {}
    for model in dict.fromkeys([*(c.model for c in study.cells),
                                *(m for m in describers.values() if m in study.models)]):
        spec = study.models[model]
        if "pretrain" in spec:
            bases[model] = add("base", f"base/{model}", {"model": model}, {"pretrain": spec["pretrain"]},
                               (worlds_id,))
    for c in study.cells:
        data_need = worlds_id if "world" in study.datasets[c.dataset] else splits.get(c.dataset)
        data = {"dataset": c.dataset, "spec": study.datasets[c.dataset]}
        needs = [data_need, bases.get(c.model)]
        if c.mode in ("text_only", "mixed"):
            describer = describers[c.dataset]
            by = {"describer_spec": study.models[describer]} if describer in study.models else {}
            needs.append(add("convert", _convert_id(c.dataset, c.quality), {"dataset": c.dataset, "quality": c.quality},
                             {**data, "quality": c.quality, **by}, (data_need, bases.get(describer))))
        model = {"model": c.model, "model_spec": study.models[c.model]}
        if c.train_id:
            train = {**study.train, **study.models[c.model].get("train", {})}
            needs = [add("train", c.train_id, {"dataset": c.dataset, "model": c.model, "mode": c.mode,
                                               "seed": c.seed, "quality": c.quality},
                         {**data, **model, "mode": c.mode, "seed": c.seed, "quality": c.quality, "train": train},
                         needs)]
        evaluate = {**study.evaluate, **study.models[c.model].get("evaluate", {})}
        add("evaluate", c.eval_id, {"dataset": c.dataset, "model": c.model, "mode": c.mode, "seed": c.seed,
                                    "quality": c.quality, "condition": c.condition, "scoring": c.scoring},
            {**data, **model, "mode": c.mode, "seed": c.seed, "quality": c.quality, "condition": c.condition,
             "scoring": c.scoring, "evaluate": evaluate}, needs)
    for page in PAGES:
        add("page", f"page/{Path(page).stem}", {}, {"page": page}, (), notebook=page)
    return steps
