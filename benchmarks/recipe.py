"""Choose the `embedded` training preset on the worlds' validation split, never on test.

For each candidate recipe (learning rate x epochs x LoRA rank), fine-tune the base model in
`image_text` mode on each world's `train/` split and score the `val/` split (new images of
the training kinds) by option likelihood; the recipe with the best mean Type 1 accuracy over
the worlds (ties: the cheaper one) is the preset. Every candidate's figures and the choice
are written, with provenance, to `book/measured/recipe.json`.

    python benchmarks/recipe.py --model data/models/base-small-seed0-f1
"""

import argparse
import itertools
import tempfile
import time
from pathlib import Path

from textonly.data.layout import load_dataset
from textonly.core.stats import accuracy_table
from textonly.pipeline.evaluate import EvalConfig, load_evaluated_model
from textonly.models.scoring import score_options
from textonly.core.fileio import dumps_json, write_text_atomic
from textonly.core.provenance import provenance
from textonly.pipeline.train import TrainConfig, train


def candidate(model: str, worlds: Path, lr: float, epochs: float, rank: int, seed: int) -> dict:
    row = {"learning_rate": lr, "epochs": epochs, "lora_r": rank, "lora_alpha": 2 * rank, "worlds": {}}
    for world in ("wings", "heritage"):
        config = TrainConfig(data=str(worlds / world / "train"), model=model, mode="image_text", seed=seed,
                             learning_rate=lr, epochs=epochs, lora_r=rank, lora_alpha=2 * rank, save_steps=10 ** 6)
        with tempfile.TemporaryDirectory() as run:
            started = time.perf_counter()
            result = train(config, run, progress=False, force=True)
            net, processor = load_evaluated_model(EvalConfig(model=model, data=str(worlds / world / "val"),
                                                             adapter=run))
            val = load_dataset(worlds / world / "val").records
            table = accuracy_table(val, score_options(net, processor, val, worlds / world / "val", progress=False))
        row["worlds"][world] = {"val": table, "train_seconds": result["wall_seconds"],
                                "seconds": round(time.perf_counter() - started, 1)}
    row["val_type1"] = sum(w["val"]["1"]["accuracy"] for w in row["worlds"].values()) / 2
    return row


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="data/models/base-small-seed0-f1")
    parser.add_argument("--worlds", type=Path, default=Path("data/worlds"))
    parser.add_argument("--lrs", default="3e-4,1e-3,3e-3")
    parser.add_argument("--epochs", default="5,10")
    parser.add_argument("--ranks", default="16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("book/measured/recipe.json"))
    args = parser.parse_args()
    rows = []
    grid = itertools.product([float(x) for x in args.lrs.split(",")], [float(x) for x in args.epochs.split(",")],
                             [int(x) for x in args.ranks.split(",")])
    for lr, epochs, rank in grid:
        rows.append(candidate(args.model, args.worlds, lr, epochs, rank, args.seed))
        r = rows[-1]
        print(f"lr {lr:g} epochs {epochs:g} rank {rank}: val Type 1 " + ", ".join(
            f"{w} {v['val']['1']['accuracy']:.3f}" for w, v in r["worlds"].items()) + f" (mean {r['val_type1']:.3f})",
            flush=True)
    best = max(rows, key=lambda r: (round(r["val_type1"], 3), -r["epochs"]))
    write_text_atomic(args.out, dumps_json({
        "chosen": {k: best[k] for k in ("learning_rate", "epochs", "lora_r", "lora_alpha")},
        "rule": "best mean val Type 1 accuracy over both worlds (image_text, option scoring); ties: fewer epochs",
        "model": args.model, "seed": args.seed, "candidates": rows, "provenance": provenance(seed=args.seed),
    }))
    print(f"chosen: {best['learning_rate']:g} lr, {best['epochs']:g} epochs, rank {best['lora_r']} -> {args.out}")
