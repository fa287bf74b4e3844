"""Evaluation: a model (with a trained adapter, if any) scored on a dataset, and accuracy with intervals.

The scorings themselves (``option``, ``letter``, ``generate``) are in
:mod:`textonly.models.scoring`. A run is evaluated on the device training would pick and
with the quantization its adapter was trained with; ``eval.json`` records both.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from textonly.core.errors import TextonlyError
from textonly.core.fileio import (build_key, dumps_json, dumps_jsonl, finished_build, module_sources, read_jsonl,
                                  write_text_atomic)
from textonly.core.prompts import CONDITIONS, DEFAULT_DESCRIPTION, SCORINGS
from textonly.core.stats import mcnemar, metrics
from textonly.models.scoring import generate_answers, score_letters, score_options
from textonly.pipeline.train import RUN_FILE, device


EVAL_FILE = "eval.json"


@dataclass
class EvalConfig:
    """One evaluation: a model (and optionally a trained adapter) on a dataset under a condition."""

    model: str
    data: str
    condition: str = "image"
    scoring: str = "option"
    adapter: str | None = None  # a training run directory (its ``adapter/``)
    description: str = DEFAULT_DESCRIPTION
    batch_size: int = 16
    max_new_tokens: int = 3  # generate scoring: K-VISCUIT's reference generates 3 tokens

    def validate(self) -> None:
        if self.condition not in CONDITIONS:
            raise TextonlyError(f"--condition {self.condition}: choose from {', '.join(CONDITIONS)}")
        if self.scoring not in SCORINGS:
            raise TextonlyError(f"--scoring {self.scoring}: choose from {', '.join(SCORINGS)}")
        if self.adapter and not ((Path(self.adapter) / "adapter").is_dir() and (Path(self.adapter) / RUN_FILE).is_file()):
            raise TextonlyError(f"--adapter {self.adapter}: no finished training run there (no adapter/ and {RUN_FILE})")
        if self.batch_size < 1:
            raise TextonlyError(f"--batch-size {self.batch_size}: give 1 or more")


def _eval_fingerprint(config: EvalConfig) -> str:
    from textonly.core.provenance import data_hash, model_identity

    from textonly.core import prompts, stats
    from textonly.models import scoring

    # the run's record holds the adapter's fingerprint and its quantization
    adapter = (Path(config.adapter) / RUN_FILE).read_bytes() if config.adapter else b""
    code = module_sources(sys.modules[__name__], scoring, prompts, stats)
    return build_key(asdict(config), data_hash(config.data), model_identity(config.model), adapter, *code)


def evaluation_setup(config: EvalConfig) -> dict:
    """``{"device", "quantization"}`` of an evaluation: the device training would pick, and the
    quantization the adapter was trained with (a QLoRA adapter is meant for a 4-bit base)."""
    quantization = None
    if config.adapter:
        quantization = json.loads((Path(config.adapter) / RUN_FILE).read_text())["config"].get("quantization")
    return {"device": device(), "quantization": quantization}


def load_evaluated_model(config: EvalConfig):
    """The model (with the run's adapter, if any) and its processor, as :func:`evaluation_setup` says."""
    from textonly.models.hub import load_model

    model, processor = load_model(config.model, **evaluation_setup(config))
    if config.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, Path(config.adapter) / "adapter")
    return model, processor


def evaluate(config: EvalConfig, out: str | Path, *, progress: bool = True, force: bool = False) -> dict:
    """Evaluate into ``out`` (``predictions.jsonl``, then ``eval.json`` last); a finished one is reused."""
    from textonly.data.layout import load_dataset
    from textonly.core.energy import track
    from textonly.core.memory import peak_memory
    from textonly.core.provenance import provenance

    config.validate()
    load_dataset(config.data, check_images=False)  # a bad folder fails in one line before it is hashed
    out = Path(out)
    key = _eval_fingerprint(config)
    if not force and finished_build(out / EVAL_FILE, key):
        return json.loads((out / EVAL_FILE).read_text())
    records = load_dataset(config.data).records
    model, processor = load_evaluated_model(config)
    tokens: dict = {}
    kwargs = dict(condition=config.condition, description=config.description, batch_size=config.batch_size,
                  progress=progress, counts=tokens)
    with track("evaluate", out) as energy, peak_memory() as memory:
        if config.scoring == "generate":
            predictions = generate_answers(model, processor, records, config.data,
                                           max_new_tokens=config.max_new_tokens, **kwargs)
        else:
            scorer = score_options if config.scoring == "option" else score_letters
            predictions = scorer(model, processor, records, config.data, **kwargs)
    by_id = {r["id_"]: r for r in records}
    kept = [{**p, "question_type": by_id[p["id_"]]["question_type"], "category": by_id[p["id_"]]["category"],
             "options": by_id[p["id_"]]["options"], "answer": by_id[p["id_"]]["answer"]} for p in predictions]
    write_text_atomic(out / "predictions.jsonl", dumps_jsonl(kept))
    summary = {"fingerprint": key, "config": asdict(config), "metrics": metrics(records, predictions),
               "questions": len(records), "questions_per_s": len(records) / energy["seconds"], "tokens": tokens,
               "energy": energy, "peak_memory_mb": memory, **evaluation_setup(config),
               "provenance": provenance(data=config.data)}
    if config.scoring == "generate":
        summary["parse_failure_rate"] = sum(p["prediction"] is None for p in predictions) / len(predictions)
    write_text_atomic(out / EVAL_FILE, dumps_json(summary))
    return summary


def read_predictions(eval_dir: str | Path) -> dict[str, bool]:
    """Correctness per question id of a finished evaluation."""
    eval_dir = Path(eval_dir)
    if not (eval_dir / EVAL_FILE).is_file():
        raise TextonlyError(f"{eval_dir}: not a finished evaluation (no {EVAL_FILE})")
    return {p["id_"]: p["correct"] for p in read_jsonl(eval_dir / "predictions.jsonl")}


def compare(eval_a: str | Path, eval_b: str | Path) -> dict:
    """McNemar's exact test between two finished evaluations of the same questions."""
    try:
        return mcnemar(read_predictions(eval_a), read_predictions(eval_b))
    except ValueError as exc:  # different questions: no pairs to compare
        raise TextonlyError(f"{eval_a} and {eval_b}: {exc}") from None
