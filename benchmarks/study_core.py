"""The study core's speed, measured side by side in one run on one model and one dataset.

1. Evaluation: ``option``, ``letter`` and ``generate`` scoring on the same questions
   (questions per second, and how often they pick the same option). Goals: option scoring
   costs at most 1.5x letter scoring; letter >= 5x faster than generate.
2. Training: samples per second of ``textonly.pipeline.train`` vs a plain TRL ``SFTTrainer`` set-up
   (same model, LoRA, data, batch and steps). Goal: not slower.
3. ``text_only`` vs ``image_text``: time and tokens per epoch.

    python benchmarks/study_core.py --model data/models/base-small-seed0-f1 --data data/worlds/wings
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from textonly.data.layout import load_dataset
from textonly.models.scoring import generate_answers, score_letters, score_options
from textonly.models.hub import load_model
from textonly.pipeline.train import Collator, TrainConfig, load_for_training, train, training_samples


def evaluation(model_path: str, test: Path, n: int) -> None:
    """The three scorings on the same questions, timed one after the other (generation stops at
    the end-of-turn token)."""
    model, processor = load_model(model_path)
    records = load_dataset(test).records[:n]
    scorers = {"option": score_options, "letter": score_letters, "generate": generate_answers}
    for run in scorers.values():
        run(model, processor, records[:4], test, progress=False)  # warm-up
    results, seconds = {}, {}
    for name, run in scorers.items():
        start = time.perf_counter()
        results[name] = run(model, processor, records, test, batch_size=16, progress=False)
        seconds[name] = time.perf_counter() - start
    rate = {name: len(records) / s for name, s in seconds.items()}
    agree = {name: sum(a["prediction"] == b["prediction"] for a, b in zip(results["letter"], results[name]))
             / len(records) for name in ("option", "generate")}
    accuracy = {name: sum(p["correct"] for p in results[name]) / len(records) for name in scorers}
    failures = sum(g["prediction"] is None for g in results["generate"]) / len(records)
    print(f"evaluation on {len(records)} questions: " + ", ".join(f"{k} {v:.1f} q/s" for k, v in rate.items()))
    print(f"  option scoring costs {seconds['option'] / seconds['letter']:.2f}x letter scoring (goal <= 1.5x); "
          f"letter is {seconds['generate'] / seconds['letter']:.1f}x faster than generate")
    print("  accuracy " + ", ".join(f"{k} {v:.3f}" for k, v in accuracy.items())
          + f"; agreement with letter: option {agree['option']:.1%}, generate {agree['generate']:.1%}; "
          f"generate parse failures {failures:.1%}")


def training_vs_trl(model_path: str, train_dir: Path, steps: int, batch: int) -> None:
    from trl import SFTConfig, SFTTrainer

    config = TrainConfig(data=str(train_dir), model=model_path, mode="image_text", batch_size=batch,
                         max_steps=steps, save_steps=10 ** 6).resolved()
    with tempfile.TemporaryDirectory() as out:
        ours = train(config, out, progress=False, force=True)
    ours_rate = steps * batch / ours["wall_seconds"]

    # TRL: its own trainer and loop, fed the same collated batches (TRL's vision path takes
    # a processor and "messages"/"images" columns; the collator is the part the two share)
    model, processor = load_for_training(config)
    samples = training_samples(load_dataset(train_dir).records, "image_text", "full")
    collator = Collator(processor, train_dir, "full")
    args = SFTConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=batch, max_steps=steps,
                     learning_rate=config.learning_rate, report_to=[], save_strategy="no", logging_steps=10 ** 6,
                     remove_unused_columns=False, use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
                     dataset_kwargs={"skip_prepare_dataset": True}, seed=0)
    from datasets import Dataset

    rows = Dataset.from_list([{"record": json.dumps(r), "condition": c} for r, c in samples])
    trainer = SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=processor,
                         data_collator=lambda batch: collator([(json.loads(b["record"]), b["condition"]) for b in batch]))
    start = time.perf_counter()
    trainer.train()
    trl_rate = steps * batch / (time.perf_counter() - start)
    print(f"training {steps} steps x batch {batch}: ours {ours_rate:.2f} samples/s, TRL SFTTrainer "
          f"{trl_rate:.2f} samples/s -> ratio {ours_rate / trl_rate:.2f}")


def modes(model_path: str, train_dir: Path) -> None:
    rows = {}
    for mode in ("image_text", "text_only"):
        config = TrainConfig(data=str(train_dir), model=model_path, mode=mode, epochs=1, save_steps=10 ** 6)
        with tempfile.TemporaryDirectory() as out:
            rows[mode] = train(config, out, progress=False, force=True)
    it, to = rows["image_text"], rows["text_only"]
    for mode, r in rows.items():
        print(f"{mode:10s} one epoch: {r['wall_seconds']:.1f} s, text tokens {r['tokens']['text_per_epoch']}, "
              f"image tokens {r['tokens']['image_per_epoch']}")
    total = lambda r: r["tokens"]["text_per_epoch"] + r["tokens"]["image_per_epoch"]  # noqa: E731
    print(f"text_only / image_text: time {to['wall_seconds'] / it['wall_seconds']:.2f}, "
          f"tokens {total(to) / total(it):.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="evaluation,training,modes")
    parser.add_argument("--model", default="data/models/base-small-seed0-f1")
    parser.add_argument("--data", default="data/worlds/wings", help="a world (its train/ and test/ splits)")
    parser.add_argument("--questions", type=int, default=160)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    data = Path(args.data)
    print(json.dumps({"model": args.model, "data": str(data), "torch_threads": torch.get_num_threads()}))
    parts = args.parts.split(",")
    if "evaluation" in parts:
        evaluation(args.model, data / "test", args.questions)
    if "training" in parts:
        training_vs_trl(args.model, data / "train", args.steps, args.batch)
    if "modes" in parts:
        modes(args.model, data / "train")
