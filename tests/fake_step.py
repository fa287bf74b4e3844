"""A workflow job for the engine's tests: ``python tests/fake_step.py --config C --profile P --root R
RUN_ID`` records the step as ``python -m textonly study step`` does, but instead of executing the
notebook writes what the stage's notebook would leave behind, in milliseconds. It appends the run id
to ``<root>/calls.txt`` and fails the steps listed in ``<root>/fail.txt``."""

import argparse
import json
import sys
import time
from pathlib import Path

from textonly.core.fileio import dumps_jsonl, read_jsonl
from textonly.study.config import load_study
from textonly.study.steps import run_step


def fake_execute(study, step) -> None:
    root = study.root
    with open(root / "calls.txt", "a") as calls:
        calls.write(step.run_id + "\n")
    with open(root / "history.txt", "a") as history:  # every execution, across runs
        history.write(step.run_id + "\n")
    runs = (root / "history.txt").read_text().split().count(step.run_id)
    if (root / "sleep.txt").is_file() and step.run_id in (root / "sleep.txt").read_text().split():
        time.sleep(600)  # until killed
    fail = (root / "fail.txt").read_text().split() if (root / "fail.txt").is_file() else []
    if step.run_id in fail:
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
        (step.dir / "data" / "convert.json").write_text(json.dumps(
            {"fingerprint": "c", "describer": "oracle", "description": "oracle-full"}))
    elif step.stage == "train":
        (step.dir / "run.json").write_text(json.dumps({  # each retraining a new result
            "fingerprint": f"{step.run_id}#{runs}", "steps": 2, "epochs": 0.2, "samples": 100, "final_loss": 1.0,
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


def main() -> int:
    parser = argparse.ArgumentParser()
    for option in ("--config", "--profile", "--root"):
        parser.add_argument(option)
    parser.add_argument("run_id")
    args = parser.parse_args()
    try:
        run_step(load_study(args.config, args.profile, root=args.root), args.run_id, execute=fake_execute)
    except Exception as exc:  # noqa: BLE001 - one line, as the real command prints it
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
