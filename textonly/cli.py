"""Command line: ``python -m textonly VERB ...`` (``--help`` lists the verbs).

Errors the user can act on (a malformed dataset, an unreachable hub) print one line
starting with ``error:`` and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from textonly.errors import TextonlyError
from textonly.prompts import ANSWER_FORMATS, SCORINGS


def _worlds_build(args: argparse.Namespace) -> int:
    from textonly.worlds.build import build_world
    from textonly.worlds.vocab import WORLDS

    names = list(WORLDS) if args.world == "all" else [args.world]
    for name in names:
        start = time.perf_counter()
        path = build_world(name, args.out, seed=args.seed, image_size=args.image_size,
                           workers=args.workers, force=args.force)
        print(f"{name}: {path} ({time.perf_counter() - start:.1f} s)")
    return 0


def _data_check(args: argparse.Namespace) -> int:
    from textonly.config import resolve_dataset_path
    from textonly.data import format_report, load_dataset

    dataset = load_dataset(resolve_dataset_path(args.path), num_options=args.options or None,
                           drop_missing_images=not args.strict, strict_ids=args.strict, progress=True)
    print(format_report(dataset))
    return 0


def _data_from_folder(args: argparse.Namespace) -> int:
    from textonly.config import resolve_dataset_path
    from textonly.data import format_report, load_dataset
    from textonly.sources import from_folder

    out = from_folder(resolve_dataset_path(args.dir), args.out, seed=args.seed, question=args.question,
                      category=args.category)
    print(format_report(load_dataset(out)))
    return 0


def _data_from_hub(args: argparse.Namespace) -> int:
    from textonly.data import format_report, load_dataset
    from textonly.sources import from_hub

    out = from_hub(args.name, args.out, split=args.split, timeout=args.timeout)
    print(format_report(load_dataset(out)))
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from textonly.pretrain import PretrainConfig, pretrain

    steps = None
    if args.steps:
        parts = [p.strip() for p in args.steps.split(",")]
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise TextonlyError(f"--steps {args.steps!r}: give three counts, language,alignment,instruction")
        steps = tuple(int(p) for p in parts)
    config = PretrainConfig(size=args.size, seed=args.seed, image_start_fraction=args.image_start_fraction,
                            worlds=str(args.worlds), precision=args.precision, steps=steps,
                            encoder={"steps": args.encoder_steps} if args.encoder_steps is not None else {})
    out = args.out or Path("data") / "models" / f"base-{args.size}-seed{args.seed}-f{args.image_start_fraction:g}"
    path = pretrain(config, out, force=args.force)
    print(f"base model: {path}")
    report = path / "report.json"
    if report.is_file():
        for world, parts in json.loads(report.read_text()).items():
            for part, table in parts.items():
                o = table["overall"]
                print(f"  {world:9s} {part:10s} {o['accuracy']:.3f} [{o['low']:.3f}, {o['high']:.3f}] (n={o['n']})")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from textonly.config import resolve_dataset_path
    from textonly.convert import convert
    from textonly.data import format_report, load_dataset

    out = convert(resolve_dataset_path(args.data), args.describer, args.out, level=args.level, model=args.model,
                  prompt=args.prompt, prompts_file=args.prompts_file, cache=args.cache,
                  max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, force=args.force)
    print(f"text-only twin: {out}")
    print(format_report(load_dataset(out)))
    return 0


def _train(args: argparse.Namespace) -> int:
    from textonly.config import resolve_dataset_path
    from textonly.train import TrainConfig, train

    config = TrainConfig(data=str(resolve_dataset_path(args.data)), model=args.model, mode=args.mode, seed=args.seed,
                         preset=args.preset, describer=args.describer, learning_rate=args.lr, epochs=args.epochs,
                         max_steps=args.max_steps, quantization=args.quantization, answer_format=args.answer_format)
    run = train(config, args.out)
    print(f"run: {args.out}  steps {run['steps']}  final loss {run['final_loss']:.4f}  "
          f"{run['wall_seconds']:.1f} s  tokens text {run['tokens']['text']} image {run['tokens']['image']}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from textonly.config import resolve_dataset_path
    from textonly.evaluate import EvalConfig, evaluate

    config = EvalConfig(model=args.model, data=str(resolve_dataset_path(args.data)), condition=args.condition,
                        scoring=args.scoring, adapter=args.adapter, describer=args.describer,
                        batch_size=args.batch_size)
    result = evaluate(config, args.out)
    rows = {"overall": result["metrics"]["overall"],
            **{f"type {k}": v for k, v in result["metrics"]["question_type"].items()}}
    for name, m in rows.items():
        print(f"  {name:10s} {m['accuracy']:.3f} [{m['low']:.3f}, {m['high']:.3f}] (n={m['n']})")
    if "parse_failure_rate" in result:
        print(f"  parse failures: {result['parse_failure_rate']:.1%} (counted wrong)")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from textonly.evaluate import compare

    result = compare(args.a, args.b)
    print(f"McNemar (exact): n={result['n']}  right only in A {result['a_only']}  right only in B "
          f"{result['b_only']}  p={result['p_value']:.4g}")
    return 0


def _study(args: argparse.Namespace) -> int:
    from textonly.study import collect, load_study, run_study

    if args.action == "collect":
        study = load_study(args.config, args.profile, root=args.root)
        for path in collect(study).values():
            print(path)
        return 0
    report = run_study(args.config, args.profile, root=args.root, only=args.only, force=args.force,
                       dry_run=args.dry_run)
    for message in report.failed.values():
        print(f"failed: {message}", file=sys.stderr)
    for run_id, why in report.blocked.items():
        print(f"not run: {run_id} ({why})", file=sys.stderr)
    print(f"study {args.config} ({args.profile}): {report.summary()}"
          + (f"; results in {report.results}" if report.results else ""))
    return 0 if report.ok else 1


def _cost_tokens(args: argparse.Namespace) -> int:
    import csv
    import io

    from textonly import architectures
    from textonly.cost import token_table
    from textonly.fileio import dumps_json, write_text_atomic
    from textonly.provenance import provenance

    datasets = {}
    for item in args.data:
        name, sep, path = item.partition("=")
        if not sep:
            raise TextonlyError(f"--data {item}: write NAME=FOLDER (e.g. k-viscuit=data/real/k-viscuit-captioner)")
        datasets[name] = path
    archs = list(architectures.ARCHITECTURES) if args.arch == ["all"] else args.arch
    rows = token_table(datasets, archs, describer=args.describer)
    out = Path(args.out)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out, table.getvalue())
    meta = {"describer": args.describer, "datasets": {k: provenance(data=v)["data_hash"] for k, v in datasets.items()},
            "architectures": {a: {"hub_id": architectures.get(a).hub_id,
                                  "tokenizer": architectures.get(a).tokenizer_source} for a in archs},
            "rows": len(rows), "command": "python -m textonly " + " ".join(sys.argv[1:]), "provenance": provenance()}
    write_text_atomic(out.with_suffix(".json"), dumps_json(meta))
    print(f"{len(rows)} rows -> {out} (provenance in {out.with_suffix('.json')})")
    return 0


def _cost_measure(args: argparse.Namespace) -> int:
    import tempfile

    import torch

    from textonly import architectures
    from textonly.data import load_dataset
    from textonly.fileio import dumps_json, write_text_atomic
    from textonly.measure import matmul_peak, measure_training
    from textonly.provenance import provenance

    if (args.arch is None) == (args.model is None):
        raise TextonlyError("give one of --arch (random weights of a paper architecture) or --model (a folder)")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype)
    if args.arch:
        model = architectures.model(args.arch, layers=args.layers, vision_layers=args.vision_layers, dtype=dtype,
                                    device=device)
        processor = architectures.processor(args.arch, max_pixels=args.max_pixels)
    else:
        from textonly.hub import load_model

        model, processor = load_model(args.model, dtype=dtype, device=device)
    out = Path(args.out)
    peak = matmul_peak(device, dtype)
    print(f"measured matmul peak on {device} in {args.dtype}: {peak / 1e12:.2f} TFLOP/s")
    records = load_dataset(args.data).records
    with tempfile.TemporaryDirectory() as energy_rows:  # codecarbon's CSV; the figures go into the JSON
        results = [measure_training(model, processor, records, args.data, mode=mode, out=energy_rows,
                                    describer=args.describer, samples=args.samples, warmup=args.warmup,
                                    accumulation=args.accumulation, peak_flops=peak)
                   for mode in args.modes]
    for r in results:
        print(f"{r['mode']:>10}: {r['seconds_per_sample']:.3f} s/sample, {r['tokens_per_sample']:.0f} tokens, "
              f"MFU {r['mfu']:.1%}, peak memory {r['peak_memory_mb']:.0f} MB")
    summary = {"architecture": args.arch, "model": args.model, "layers": args.layers,
               "vision_layers": args.vision_layers, "max_pixels": args.max_pixels, "data": str(args.data),
               "describer": args.describer, "results": results,
               "command": "python -m textonly " + " ".join(sys.argv[1:]), "provenance": provenance(data=args.data)}
    write_text_atomic(out, dumps_json(summary))
    print(f"-> {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m textonly", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    worlds = verbs.add_parser("worlds", help="the synthetic worlds (wings, heritage)")
    wverbs = worlds.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = wverbs.add_parser("build", help="generate the worlds: images, study splits, pretraining material")
    build.add_argument("--out", type=Path, required=True, help="folder to write <world>/ into")
    build.add_argument("--world", default="all", choices=["all", "wings", "heritage"])
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--image-size", type=int, default=64, help="image side in pixels (default 64)")
    build.add_argument("--workers", type=int, default=None, help="rendering processes (default: CPU count)")
    build.add_argument("--force", action="store_true", help="rebuild even if the same build is there")
    build.set_defaults(func=_worlds_build)

    pre = verbs.add_parser("pretrain", help="pretrain an embedded base VLM (LLaVA architecture) on the worlds "
                                            "(its CLIP vision encoder first, if it is not built yet)")
    pre.add_argument("--size", default="small", choices=["tiny", "small", "base"])
    pre.add_argument("--out", type=Path, default=None, help="checkpoint folder (default: data/models/base-...)")
    pre.add_argument("--seed", type=int, default=0)
    pre.add_argument("--image-start-fraction", type=float, default=1.0,
                     help="fraction of language pretraining done before images appear (0..1; default 1)")
    pre.add_argument("--worlds", type=Path, default=Path("data/worlds"), help="where `worlds build` wrote the worlds")
    pre.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    pre.add_argument("--steps", default=None, help="language,alignment,instruction steps (default: per size)")
    pre.add_argument("--encoder-steps", type=int, default=None,
                     help="steps of the vision encoder's own pretraining (default: per size; built once, shared)")
    pre.add_argument("--force", action="store_true", help="retrain even if the same build is there")
    pre.set_defaults(func=_pretrain)

    from textonly.convert import DESCRIBERS, LEVELS

    co = verbs.add_parser("convert", help="image-text dataset -> its text-only twin (a description per image)")
    co.add_argument("--data", required=True, help="dataset folder (or a name under the data root)")
    co.add_argument("--describer", required=True, choices=DESCRIBERS)
    co.add_argument("--out", type=Path, required=True)
    co.add_argument("--level", default=None, choices=LEVELS, help="oracle: description quality (default full)")
    co.add_argument("--model", default=None, help="captioner: model folder or hub id; openai: model name")
    co.add_argument("--prompt", default=None, help="key of the description prompt in the prompts file")
    co.add_argument("--prompts-file", default=None, help="YAML of description prompts (default: the package's)")
    co.add_argument("--cache", default=None, help="openai: folder of cached answers")
    co.add_argument("--max-new-tokens", type=int, default=256)
    co.add_argument("--batch-size", type=int, default=16)
    co.add_argument("--force", action="store_true", help="describe again even if the same twin is there")
    co.set_defaults(func=_convert)

    tr = verbs.add_parser("train", help="fine-tune a VLM with LoRA: image_text, text_only or mixed")
    tr.add_argument("--data", required=True, help="training dataset folder (or a name under the data root)")
    tr.add_argument("--model", required=True, help="model folder or hub id")
    tr.add_argument("--mode", required=True, choices=["image_text", "text_only", "mixed"])
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--out", type=Path, required=True, help="run directory (the same command resumes it)")
    tr.add_argument("--preset", default="embedded", choices=["paper", "embedded"])
    tr.add_argument("--describer", default="full", help="which description stands in for the image")
    tr.add_argument("--lr", type=float, default=None, help="learning rate (default: the preset's)")
    tr.add_argument("--epochs", type=float, default=None, help="epochs (default: the preset's)")
    tr.add_argument("--max-steps", type=int, default=-1, help="stop after this many optimizer steps")
    tr.add_argument("--quantization", default=None, choices=["4bit"], help="QLoRA through bitsandbytes")
    tr.add_argument("--answer-format", default=None, choices=ANSWER_FORMATS,
                    help="what the assistant answers: the option's text or its letter (default: the preset's)")
    tr.set_defaults(func=_train)

    ev = verbs.add_parser("evaluate", help="score a model (optionally with a run's adapter) on a dataset")
    ev.add_argument("--model", required=True, help="model folder or hub id")
    ev.add_argument("--adapter", default=None, help="a finished training run directory")
    ev.add_argument("--data", required=True, help="dataset folder (or a name under the data root)")
    ev.add_argument("--condition", default="image", choices=["image", "no_image", "description"])
    ev.add_argument("--scoring", default="option", choices=SCORINGS,
                    help="option: each option's text by its likelihood (default); letter; generate")
    ev.add_argument("--describer", default="full", help="the description used by --condition description")
    ev.add_argument("--batch-size", type=int, default=16)
    ev.add_argument("--out", type=Path, required=True, help="evaluation directory")
    ev.set_defaults(func=_evaluate)

    cmp_ = verbs.add_parser("compare", help="McNemar's exact test between two evaluations of the same questions")
    cmp_.add_argument("a", type=Path, help="evaluation directory A")
    cmp_.add_argument("b", type=Path, help="evaluation directory B")
    cmp_.set_defaults(func=_compare)

    st = verbs.add_parser("study", help="run a study config's grid of notebooks through papermill; collect results")
    sverbs = st.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("run", "execute every notebook not up to date, collect the tables, render the pages"),
                         ("collect", "gather the finished evaluations into the results tables")):
        sp = sverbs.add_parser(action, help=text)
        sp.add_argument("--config", default="studies/main.yaml", help="study config (YAML)")
        sp.add_argument("--profile", default="default", help="smoke | default | full (as the config defines)")
        sp.add_argument("--root", default=None, help="folder the config's paths are relative to (default: project)")
        if action == "run":
            sp.add_argument("--only", default=None, help="run just the steps whose run id contains this text")
            sp.add_argument("--force", action="store_true", help="execute even the steps that are up to date")
            sp.add_argument("--dry-run", action="store_true", help="list what would run; execute nothing")
        sp.set_defaults(func=_study)

    cost = verbs.add_parser("cost", help="the cost of a training sample: tokens, FLOPs, measured steps")
    cverbs = cost.add_subparsers(dest="action", required=True, metavar="ACTION")
    tok = cverbs.add_parser("tokens", help="run the paper architectures' processors on datasets; tokens per sample")
    tok.add_argument("--data", action="append", required=True, metavar="NAME=FOLDER",
                     help="a dataset with descriptions (repeatable); NAME keys the paper's run size")
    tok.add_argument("--describer", required=True, help="the description label that stands in for the image")
    tok.add_argument("--arch", nargs="+", default=["all"], help="architectures (default: all)")
    tok.add_argument("--out", required=True, help="CSV to write (and its .json provenance beside it)")
    tok.set_defaults(func=_cost_tokens)
    me = cverbs.add_parser("measure", help="time LoRA training steps in both modes (GPU or CPU)")
    me.add_argument("--arch", default=None, help="a paper architecture, random weights (textonly.architectures)")
    me.add_argument("--model", default=None, help="or a model folder / hub id (e.g. an embedded base model)")
    me.add_argument("--data", type=Path, required=True, help="dataset folder with descriptions")
    me.add_argument("--describer", required=True, help="the description label for text_only")
    me.add_argument("--modes", nargs="+", default=["image_text", "text_only"])
    me.add_argument("--samples", type=int, default=32, help="timed samples per mode")
    me.add_argument("--warmup", type=int, default=2, help="untimed samples first")
    me.add_argument("--accumulation", type=int, default=32, help="gradient accumulation (batch 1, as the paper)")
    me.add_argument("--device", default=None, help="cuda or cpu (default: cuda when there is one)")
    me.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    me.add_argument("--layers", type=int, default=None, help="fewer language layers (a CPU check of the path)")
    me.add_argument("--vision-layers", type=int, default=None, help="fewer vision layers")
    me.add_argument("--max-pixels", type=int, default=None, help="Qwen2-VL's image pixel bound")
    me.add_argument("--out", required=True, help="JSON to write")
    me.set_defaults(func=_cost_measure)

    data = verbs.add_parser("data", help="datasets in the study's layout (annotations.jsonl + images/)")
    dverbs = data.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = dverbs.add_parser("check", help="validate a dataset and print counts per question_type and category")
    check.add_argument("path", help="dataset folder, or a name under the data root (e.g. k-viscuit)")
    check.add_argument("--options", type=int, default=4, help="options per question (0: any number)")
    check.add_argument("--strict", action="store_true", help="a missing image or any reused id_ is an error")
    check.set_defaults(func=_data_check)
    folder = dverbs.add_parser("from-folder", help="class-per-folder images -> Type 1 four-option questions")
    folder.add_argument("dir", help="folder with one sub-folder of images per class")
    folder.add_argument("--out", type=Path, required=True)
    folder.add_argument("--seed", type=int, default=0)
    folder.add_argument("--question", default="Which species is shown in the image?")
    folder.add_argument("--category", default=None,
                        help="category of every question (default: the class label itself)")
    folder.set_defaults(func=_data_from_folder)
    hub = dverbs.add_parser("from-hub", help="download a paper dataset from the Hugging Face hub (needs network)")
    hub.add_argument("name", help="ddehun/k-viscuit or Dasool/butterflies_and_moths_vqa")
    hub.add_argument("--out", type=Path, required=True)
    hub.add_argument("--split", default="test")
    hub.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the hub")
    hub.set_defaults(func=_data_from_hub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TextonlyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing half-written was left looking finished", file=sys.stderr)
        return 130
