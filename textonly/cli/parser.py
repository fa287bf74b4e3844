"""The command line's verbs and their arguments.

Every choice and default that the package defines is taken from its definition (the
conditions from :mod:`textonly.core.prompts`, the training modes and presets from
:mod:`textonly.pipeline.train`, ...), never retyped here. Each verb adds its own arguments,
importing those definitions; :func:`build_parser` can add just the verb being run, so that
``python -m textonly data check`` does not import torch for the choices of ``train``.
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

from textonly.cli import commands

DESCRIPTION = "Command line: python -m textonly VERB ... (--help after a verb lists its arguments)."


def _default(function, name: str):
    """The default of a function's keyword argument (so that the command line does not restate it)."""
    return inspect.signature(function).parameters[name].default


def _positive(text: str) -> int:
    """A count that must be at least 1 (a batch size, a number of tokens or samples)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _worlds(parser: argparse.ArgumentParser) -> None:
    from textonly.organism.worlds.build import build_world
    from textonly.organism.worlds.vocab import WORLDS

    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = actions.add_parser("build", help="generate the worlds: images, study splits, pretraining material")
    build.add_argument("--out", type=Path, required=True, help="folder to write <world>/ into")
    build.add_argument("--world", default="all", choices=["all", *WORLDS])
    build.add_argument("--seed", type=int, default=_default(build_world, "seed"))
    build.add_argument("--image-size", type=int, default=_default(build_world, "image_size"),
                       help="image side in pixels (default %(default)s)")
    build.add_argument("--workers", type=_positive, default=None, help="rendering processes (default: CPU count)")
    build.add_argument("--force", action="store_true", help="rebuild even if the same build is there")
    build.set_defaults(func=commands.run_worlds_build)


def _pretrain(parser: argparse.ArgumentParser) -> None:
    from textonly.organism.pretrain import PRECISIONS, PretrainConfig
    from textonly.organism.vlm import MODEL_SIZES

    parser.add_argument("--size", default=PretrainConfig.size, choices=list(MODEL_SIZES))
    parser.add_argument("--out", type=Path, default=None, help="checkpoint folder (default: data/models/base-...)")
    parser.add_argument("--seed", type=int, default=PretrainConfig.seed)
    parser.add_argument("--image-start-fraction", type=float, default=PretrainConfig.image_start_fraction,
                        help="fraction of language pretraining done before images appear (0..1; default %(default)s)")
    parser.add_argument("--worlds", type=Path, default=Path(PretrainConfig.worlds),
                        help="where `worlds build` wrote the worlds")
    parser.add_argument("--precision", default=PretrainConfig.precision, choices=PRECISIONS)
    parser.add_argument("--steps", default=None, help="language,alignment,instruction steps (default: per size)")
    parser.add_argument("--encoder-steps", type=int, default=None,
                        help="steps of the vision encoder's own pretraining (default: per size; built once, shared)")
    parser.add_argument("--force", action="store_true", help="retrain even if the same build is there")
    parser.set_defaults(func=commands.run_pretrain)


def _convert(parser: argparse.ArgumentParser) -> None:
    from textonly.pipeline.convert import convert
    from textonly.organism.worlds.text import QUALITIES
    from textonly.pipeline.describers import DESCRIBERS

    parser.add_argument("--data", required=True, help="dataset folder (or a name under the data root)")
    parser.add_argument("--describer", required=True, choices=DESCRIBERS)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quality", default=None, choices=QUALITIES,
                        help="oracle: the description's quality (default full)")
    parser.add_argument("--model", default=None, help="captioner: model folder or hub id; openai: model name")
    parser.add_argument("--prompt", default=None, help="key of the description prompt in the prompts file")
    parser.add_argument("--prompts-file", default=None, help="YAML of description prompts (default: the package's)")
    parser.add_argument("--cache", default=None, help="openai: folder of cached answers")
    parser.add_argument("--max-new-tokens", type=_positive, default=_default(convert, "max_new_tokens"))
    parser.add_argument("--batch-size", type=_positive, default=_default(convert, "batch_size"))
    parser.add_argument("--force", action="store_true", help="describe again even if the same twin is there")
    parser.set_defaults(func=commands.run_convert)


def _train(parser: argparse.ArgumentParser) -> None:
    from textonly.core.prompts import ANSWER_FORMATS
    from textonly.models.hub import QUANTIZATIONS
    from textonly.core.prompts import TRAIN_MODES
    from textonly.pipeline.train import PRESETS, TrainConfig

    parser.add_argument("--data", required=True, help="training dataset folder (or a name under the data root)")
    parser.add_argument("--model", required=True, help="model folder or hub id")
    parser.add_argument("--mode", required=True, choices=TRAIN_MODES)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--out", type=Path, required=True, help="run directory (the same command resumes it)")
    parser.add_argument("--preset", default=TrainConfig.preset, choices=list(PRESETS))
    parser.add_argument("--description", default=TrainConfig.description,
                        help="which description (its name in the records' descriptions) stands in for the image "
                             "(default %(default)s)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the preset's)")
    parser.add_argument("--epochs", type=float, default=None, help="epochs (default: the preset's)")
    parser.add_argument("--max-steps", type=int, default=TrainConfig.max_steps,
                        help="stop after this many optimizer steps")
    parser.add_argument("--quantization", default=None, choices=[q for q in QUANTIZATIONS if q],
                        help="QLoRA through bitsandbytes")
    parser.add_argument("--answer-format", default=None, choices=ANSWER_FORMATS,
                        help="what the assistant answers: the option's text or its letter (default: the preset's)")
    parser.add_argument("--force", action="store_true",
                        help="train anew even if the same run finished there (its checkpoints are removed)")
    parser.set_defaults(func=commands.run_train)


def _evaluate(parser: argparse.ArgumentParser) -> None:
    from textonly.core.prompts import CONDITIONS, SCORINGS
    from textonly.pipeline.evaluate import EvalConfig

    parser.add_argument("--model", required=True, help="model folder or hub id")
    parser.add_argument("--adapter", default=None, help="a finished training run directory")
    parser.add_argument("--data", required=True, help="dataset folder (or a name under the data root)")
    parser.add_argument("--condition", default=EvalConfig.condition, choices=CONDITIONS)
    parser.add_argument("--scoring", default=EvalConfig.scoring, choices=SCORINGS,
                        help="option: each option's text by its likelihood (default); letter; generate")
    parser.add_argument("--description", default=EvalConfig.description,
                        help="the description used by --condition description (default %(default)s)")
    parser.add_argument("--batch-size", type=_positive, default=EvalConfig.batch_size)
    parser.add_argument("--out", type=Path, required=True, help="evaluation directory")
    parser.set_defaults(func=commands.run_evaluate)


def _compare(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", type=Path, help="evaluation directory A")
    parser.add_argument("b", type=Path, help="evaluation directory B")
    parser.set_defaults(func=commands.run_compare)


def _study(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("run", "run every step not up to date (Snakemake), collect the tables, publish the pages"),
                         ("step", "execute one step's notebook and record it (what a workflow job runs)"),
                         ("collect", "gather the finished evaluations into the results tables")):
        sub = actions.add_parser(action, help=text)
        sub.add_argument("--config", default="studies/main.yaml", help="study config (YAML)")
        sub.add_argument("--profile", default="default", help="smoke | default | full (as the config defines)")
        sub.add_argument("--root", default=None, help="folder the config's paths are relative to (default: project)")
        if action == "step":
            sub.add_argument("run_id", help="the step's run id (e.g. train/wings-small-text_only-full-s0)")
        if action == "run":
            sub.add_argument("--only", default=None, help="run just the steps whose run id contains this text "
                                                          "(and what they need)")
            sub.add_argument("--force", action="store_true", help="execute even the steps that are up to date")
            sub.add_argument("--dry-run", action="store_true", help="list what would run; execute nothing")
            sub.add_argument("--cores", type=_positive, default=None, help="local cores (default: all)")
            sub.add_argument("--cluster", default=None, metavar="PROFILE",
                             help="a Snakemake profile: a name under workflow/profiles (slurm) or a folder")
            sub.add_argument("snakemake_args", nargs=argparse.REMAINDER,
                             help="after --: more Snakemake options (e.g. -- --jobs 50)")
        sub.set_defaults(func=commands.run_study)


def _cost(parser: argparse.ArgumentParser) -> None:
    from textonly.cost.flops import COST_MODES
    from textonly.cost.measure import DTYPES
    from textonly.models.architectures import ARCHITECTURES

    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    tok = actions.add_parser("tokens", help="run the paper architectures' processors on datasets; tokens per sample")
    tok.add_argument("--data", action="append", required=True, metavar="NAME=FOLDER",
                     help="a dataset with descriptions (repeatable); NAME keys the paper's run size")
    tok.add_argument("--description", required=True, help="the description (its name) that stands in for the image")
    tok.add_argument("--arch", nargs="+", default=["all"], choices=["all", *ARCHITECTURES],
                     help="architectures (default: all)")
    tok.add_argument("--out", required=True, help="CSV to write (and its .json provenance beside it)")
    tok.set_defaults(func=commands.run_cost_tokens)
    me = actions.add_parser("measure", help="time LoRA training steps in both modes (GPU or CPU)")
    me.add_argument("--arch", default=None, choices=list(ARCHITECTURES), help="a paper architecture, random weights")
    me.add_argument("--model", default=None, help="or a model folder / hub id (e.g. an embedded base model)")
    me.add_argument("--data", required=True, help="dataset folder with descriptions")
    me.add_argument("--description", required=True, help="the description (its name) for text_only")
    me.add_argument("--modes", nargs="+", default=list(COST_MODES), choices=COST_MODES)
    me.add_argument("--samples", type=_positive, default=32, help="timed samples per mode")
    me.add_argument("--warmup", type=int, default=2, help="untimed samples first")
    me.add_argument("--accumulation", type=_positive, default=32, help="gradient accumulation (batch 1, as the paper)")
    me.add_argument("--device", default=None, help="cuda or cpu (default: cuda when there is one)")
    me.add_argument("--dtype", default=DTYPES[0], choices=DTYPES)
    me.add_argument("--layers", type=int, default=None, help="fewer language layers (a CPU check of the path)")
    me.add_argument("--vision-layers", type=int, default=None, help="fewer vision layers")
    me.add_argument("--max-pixels", type=int, default=None, help="Qwen2-VL's image pixel bound")
    me.add_argument("--out", required=True, help="JSON to write")
    me.set_defaults(func=commands.run_cost_measure)


def _data(parser: argparse.ArgumentParser) -> None:
    from textonly.data.layout import NUM_OPTIONS
    from textonly.data.sources import HUB_DATASETS, from_folder, from_hub

    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = actions.add_parser("check", help="validate a dataset and print counts per question_type and category")
    check.add_argument("path", help="dataset folder, or a name under the data root (e.g. k-viscuit)")
    check.add_argument("--options", type=int, default=NUM_OPTIONS, help="options per question (0: any number)")
    check.add_argument("--strict", action="store_true", help="a missing image or any reused id_ is an error")
    check.set_defaults(func=commands.run_data_check)
    folder = actions.add_parser("from-folder", help="class-per-folder images -> Type 1 four-option questions")
    folder.add_argument("dir", help="folder with one sub-folder of images per class")
    folder.add_argument("--out", type=Path, required=True)
    folder.add_argument("--seed", type=int, default=_default(from_folder, "seed"))
    folder.add_argument("--question", default=_default(from_folder, "question"))
    folder.add_argument("--category", default=None, help="category of every question (default: the class label itself)")
    folder.set_defaults(func=commands.run_data_from_folder)
    hub = actions.add_parser("from-hub", help="download a paper dataset from the Hugging Face hub (needs network)")
    hub.add_argument("name", help=" or ".join(HUB_DATASETS))
    hub.add_argument("--out", type=Path, required=True)
    hub.add_argument("--split", default=_default(from_hub, "split"))
    hub.add_argument("--timeout", type=float, default=_default(from_hub, "timeout"), help="seconds to wait for the hub")
    hub.set_defaults(func=commands.run_data_from_hub)
    _data_split(actions)


def _data_split(actions) -> None:
    from textonly.data.splits import SPLITS, split_by_image, split_classes

    split = actions.add_parser("split", help="a real dataset's training and test splits (OUT/train, OUT/test)")
    kinds = split.add_subparsers(dest="kind", required=True, metavar="KIND")
    helps = {"by-image": "a dataset in the layout (K-VISCUIT) split by image with a seed",
             "classes": "a class-per-folder collection (butterflies-100): training images from one folder, "
                        "test images from another",
             "folder": "your own split: a folder with train/ and test/ in the layout, checked and linked"}
    for kind in SPLITS:
        sub = kinds.add_parser(kind, help=helps[kind], description=helps[kind])
        sub.add_argument("source", help="the source folder, or a name under the data root (e.g. k-viscuit)")
        sub.add_argument("--out", type=Path, required=True, help="folder to write train/, test/ and split.json")
        sub.add_argument("--force", action="store_true", help="split again even if the same split is there")
        sub.set_defaults(func=commands.run_data_split)
        if kind != "folder":
            sub.add_argument("--seed", type=int, default=0)
    by_image = kinds.choices["by-image"]
    by_image.add_argument("--test-fraction", type=float, default=_default(split_by_image, "test_fraction"),
                          help="share of the images on the test side (default %(default)s)")
    by_image.add_argument("--max-images", type=int, default=None, help="a seeded subset of the images (a quick run)")
    by_image.add_argument("--train-types", type=int, nargs="+", default=None,
                          help="question types the training side keeps (default: all; the paper: 1)")
    classes = kinds.choices["classes"]
    for name in ("train_from", "test_from", "per_class"):
        classes.add_argument("--" + name.replace("_", "-"), type=type(_default(split_classes, name)),
                             default=_default(split_classes, name), help="default %(default)s")
    classes.add_argument("--max-classes", type=int, default=None, help="a seeded subset of the classes (a quick run)")
    classes.add_argument("--test-per-class", type=int, default=None, help="test images per class (default: all)")


#: verb -> (its one-line help, the function that adds its arguments)
VERBS = {
    "worlds": ("the synthetic worlds (wings, heritage)", _worlds),
    "pretrain": ("pretrain an embedded base VLM (LLaVA architecture) on the worlds "
                 "(its CLIP vision encoder first, if it is not built yet)", _pretrain),
    "convert": ("image-text dataset -> its text-only twin (a description per image)", _convert),
    "train": ("fine-tune a VLM with LoRA: image_text, text_only or mixed", _train),
    "evaluate": ("score a model (optionally with a run's adapter) on a dataset", _evaluate),
    "compare": ("McNemar's exact test between two evaluations of the same questions", _compare),
    "study": ("run a study config's grid of notebooks through papermill; collect results", _study),
    "cost": ("the cost of a training sample: tokens, FLOPs, measured steps", _cost),
    "data": ("datasets in the study's layout (annotations.jsonl + images/)", _data),
}


def build_parser(verbs=None) -> argparse.ArgumentParser:
    """The parser of the command line; with ``verbs``, only those verbs get their arguments (the
    others are listed, with their help, but parse nothing)."""
    parser = argparse.ArgumentParser(prog="python -m textonly", description=DESCRIPTION)
    subparsers = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, (text, add_arguments) in VERBS.items():
        sub = subparsers.add_parser(name, help=text, description=text)
        if verbs is None or name in verbs:
            add_arguments(sub)
    return parser
