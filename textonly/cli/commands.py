"""What each verb of the command line does, given its parsed arguments; returns the exit status.

Each imports what it needs when it runs, so that a verb loads only its own stage of the
package. Inputs a command can check cheaply (the data folder, the descriptions an
evaluation needs) are checked before any model is loaded, so that a mistake costs a
second, not a model load, and is reported as one line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from textonly.core.errors import TextonlyError
from textonly.core.prompts import check_descriptions


def dataset_folder(value: str | Path) -> Path:
    """The folder a ``--data`` names: a path, or a name under the data root."""
    from textonly.core.config import data_root, resolve_dataset_path

    path = resolve_dataset_path(value)
    if not path.is_dir():
        raise TextonlyError(f"{value}: no such dataset folder (nor under the data root {data_root()})")
    return path


def check_questions(path: Path, description: str | None = None) -> None:
    """Validate the dataset's questions (not yet its images) and, with ``description``, that each
    carries that description: the mistakes found before a model is loaded for them."""
    from textonly.data.layout import load_dataset

    records = load_dataset(path, check_images=False).records
    if description is not None:
        check_descriptions(records, description, where=str(path))


def run_worlds_build(args: argparse.Namespace) -> int:
    from textonly.organism.worlds.build import build_world
    from textonly.organism.worlds.vocab import WORLDS

    names = list(WORLDS) if args.world == "all" else [args.world]
    for name in names:
        start = time.perf_counter()
        path = build_world(name, args.out, seed=args.seed, image_size=args.image_size,
                           workers=args.workers, force=args.force)
        print(f"{name}: {path} ({time.perf_counter() - start:.1f} s)")
    return 0


def run_data_check(args: argparse.Namespace) -> int:
    from textonly.data.layout import format_report, load_dataset

    dataset = load_dataset(dataset_folder(args.path), num_options=args.options or None,
                           drop_missing_images=not args.strict, strict_ids=args.strict, progress=True)
    print(format_report(dataset))
    return 0


def run_data_from_folder(args: argparse.Namespace) -> int:
    from textonly.core.config import resolve_dataset_path
    from textonly.data.layout import format_report, load_dataset
    from textonly.data.sources import from_folder

    out = from_folder(resolve_dataset_path(args.dir), args.out, seed=args.seed, question=args.question,
                      category=args.category)
    print(format_report(load_dataset(out)))
    return 0


def run_data_from_hub(args: argparse.Namespace) -> int:
    from textonly.data.layout import format_report, load_dataset
    from textonly.data.sources import from_hub

    out = from_hub(args.name, args.out, split=args.split, timeout=args.timeout)
    print(format_report(load_dataset(out)))
    return 0


def run_data_split(args: argparse.Namespace) -> int:
    from textonly.data.layout import format_report, load_dataset
    from textonly.data.splits import make_split, split_options

    settings = {name: getattr(args, name) for name in split_options(args.kind)}
    out = make_split(args.kind, dataset_folder(args.source), args.out, force=args.force, **settings)
    for side in ("train", "test"):
        print(format_report(load_dataset(out / side, num_options=None)))
    print(f"split: {out / 'split.json'}")
    return 0


def run_pretrain(args: argparse.Namespace) -> int:
    from textonly.organism.pretrain import PretrainConfig, pretrain
    from textonly.study.config import model_dir_name

    steps = None
    if args.steps:
        parts = [p.strip() for p in args.steps.split(",")]
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise TextonlyError(f"--steps {args.steps!r}: give three counts, language,alignment,instruction")
        steps = tuple(int(p) for p in parts)
    encoder = {"steps": args.encoder_steps} if args.encoder_steps is not None else {}
    config = PretrainConfig(size=args.size, seed=args.seed, image_start_fraction=args.image_start_fraction,
                            worlds=str(args.worlds), precision=args.precision, steps=steps, encoder=encoder)
    name = model_dir_name({"size": args.size, "seed": args.seed, "image_start_fraction": args.image_start_fraction,
                           "steps": steps, "encoder": encoder})  # as a study names the same model
    path = pretrain(config, args.out or Path("data") / "models" / name, force=args.force)
    print(f"base model: {path}")
    report = path / "report.json"
    if report.is_file():
        for world, parts in json.loads(report.read_text()).items():
            for part, table in parts.items():
                o = table["overall"]
                print(f"  {world:9s} {part:10s} {o['accuracy']:.3f} [{o['low']:.3f}, {o['high']:.3f}] (n={o['n']})")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from textonly.data.layout import format_report, load_dataset
    from textonly.pipeline.convert import convert

    out = convert(dataset_folder(args.data), args.describer, args.out, quality=args.quality, model=args.model,
                  prompt=args.prompt, prompts_file=args.prompts_file, cache=args.cache,
                  max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, force=args.force)
    print(f"text-only twin: {out}")
    print(format_report(load_dataset(out)))
    return 0


def run_train(args: argparse.Namespace) -> int:
    from textonly.pipeline.train import TrainConfig, train

    data = dataset_folder(args.data)
    check_questions(data, None if args.mode == "image_text" else args.description)
    config = TrainConfig(data=str(data), model=args.model, mode=args.mode, seed=args.seed,
                         preset=args.preset, description=args.description, learning_rate=args.lr, epochs=args.epochs,
                         max_steps=args.max_steps, quantization=args.quantization, answer_format=args.answer_format)
    run = train(config, args.out, force=args.force)
    print(f"run: {args.out}  steps {run['steps']}  final loss {run['final_loss']:.4f}  "
          f"{run['wall_seconds']:.1f} s  tokens text {run['tokens']['text']} image {run['tokens']['image']}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from textonly.pipeline.evaluate import EvalConfig, evaluate

    data = dataset_folder(args.data)
    check_questions(data, args.description if args.condition == "description" else None)
    config = EvalConfig(model=args.model, data=str(data), condition=args.condition, scoring=args.scoring,
                        adapter=args.adapter, description=args.description, batch_size=args.batch_size)
    result = evaluate(config, args.out)
    rows = {"overall": result["metrics"]["overall"],
            **{f"type {k}": v for k, v in result["metrics"]["question_type"].items()}}
    for name, m in rows.items():
        print(f"  {name:10s} {m['accuracy']:.3f} [{m['low']:.3f}, {m['high']:.3f}] (n={m['n']})")
    if "parse_failure_rate" in result:
        print(f"  parse failures: {result['parse_failure_rate']:.1%} (counted wrong)")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from textonly.pipeline.evaluate import compare

    result = compare(args.a, args.b)
    print(f"McNemar (exact): n={result['n']}  right only in A {result['a_only']}  right only in B "
          f"{result['b_only']}  p={result['p_value']:.4g}")
    return 0


def run_study(args: argparse.Namespace) -> int:
    from textonly.study.collect import collect
    from textonly.study.config import load_study
    from textonly.study.engine import run_study as run
    from textonly.study.steps import run_step

    if args.action == "collect":
        for path in collect(load_study(args.config, args.profile, root=args.root)).values():
            print(path)
        return 0
    if args.action == "step":
        run_step(load_study(args.config, args.profile, root=args.root), args.run_id)
        return 0
    extra = args.snakemake_args[1:] if args.snakemake_args[:1] == ["--"] else args.snakemake_args
    report = run(args.config, args.profile, root=args.root, only=args.only, force=args.force, dry_run=args.dry_run,
                 cores=args.cores, cluster=args.cluster, extra=extra)
    for message in report.failed.values():
        print(f"failed: {message}", file=sys.stderr)
    for run_id, why in report.blocked.items():
        print(f"not run: {run_id} ({why})", file=sys.stderr)
    print(f"study {args.config} ({args.profile}): {report.summary()}"
          + (f"; results in {report.results}" if report.results else ""))
    return 0 if report.ok else 1


def run_cost_tokens(args: argparse.Namespace) -> int:
    import csv
    import io

    from textonly.core.fileio import dumps_json, write_text_atomic
    from textonly.core.provenance import provenance
    from textonly.cost.flops import token_table
    from textonly.models import architectures

    datasets = {}
    for item in args.data:
        name, sep, path = item.partition("=")
        if not sep:
            raise TextonlyError(f"--data {item}: write NAME=FOLDER (e.g. k-viscuit=data/real/k-viscuit-captioner)")
        datasets[name] = str(dataset_folder(path))
    archs = list(architectures.ARCHITECTURES) if args.arch == ["all"] else args.arch
    rows = token_table(datasets, archs, description=args.description)
    out = Path(args.out)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out, table.getvalue())
    meta = {"description": args.description, "datasets": {k: provenance(data=v)["data_hash"] for k, v in datasets.items()},
            "architectures": {a: {"hub_id": architectures.get(a).hub_id,
                                  "tokenizer": architectures.get(a).tokenizer_source} for a in archs},
            "rows": len(rows), "command": "python -m textonly " + " ".join(sys.argv[1:]), "provenance": provenance()}
    write_text_atomic(out.with_suffix(".json"), dumps_json(meta))
    print(f"{len(rows)} rows -> {out} (provenance in {out.with_suffix('.json')})")
    return 0


def _measured_model(args: argparse.Namespace, device: str, dtype):
    """The model and processor ``cost measure`` times: a paper architecture's (random weights) or a folder's."""
    from textonly.models import architectures

    if (args.arch is None) == (args.model is None):
        raise TextonlyError("give one of --arch (random weights of a paper architecture) or --model (a folder)")
    if args.arch:
        model = architectures.model(args.arch, layers=args.layers, vision_layers=args.vision_layers, dtype=dtype,
                                    device=device)
        return model, architectures.processor(args.arch, max_pixels=args.max_pixels)
    from textonly.models.hub import load_model

    return load_model(args.model, dtype=dtype, device=device)


def run_cost_measure(args: argparse.Namespace) -> int:
    import tempfile

    import torch

    from textonly.core.fileio import dumps_json, write_text_atomic
    from textonly.core.provenance import provenance
    from textonly.cost.measure import matmul_peak, measure_training
    from textonly.data.layout import load_dataset

    data = dataset_folder(args.data)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype)
    model, processor = _measured_model(args, device, dtype)
    peak = matmul_peak(device, dtype)
    print(f"measured matmul peak on {device} in {args.dtype}: {peak / 1e12:.2f} TFLOP/s")
    records = load_dataset(data).records
    with tempfile.TemporaryDirectory() as energy_rows:  # codecarbon's CSV; the figures go into the JSON
        results = [measure_training(model, processor, records, data, mode=mode, out=energy_rows,
                                    description=args.description, samples=args.samples, warmup=args.warmup,
                                    accumulation=args.accumulation, peak_flops=peak)
                   for mode in args.modes]
    for r in results:
        print(f"{r['mode']:>10}: {r['seconds_per_sample']:.3f} s/sample, {r['tokens_per_sample']:.0f} tokens, "
              f"MFU {r['mfu']:.1%}, peak memory {r['peak_memory_mb']:.0f} MB")
    summary = {"architecture": args.arch, "model": args.model, "layers": args.layers,
               "vision_layers": args.vision_layers, "max_pixels": args.max_pixels, "data": str(data),
               "description": args.description, "results": results,
               "command": "python -m textonly " + " ".join(sys.argv[1:]), "provenance": provenance(data=data)}
    write_text_atomic(Path(args.out), dumps_json(summary))
    print(f"-> {args.out}")
    return 0
