"""Fine-tune a VLM on a multiple-choice dataset: ``image_text``, ``text_only`` or ``mixed``.

The paper's method: LoRA on the language model (regex-targeted) plus the projector
trained in full, the vision tower frozen, transformers' ``Trainer`` doing the loop.

* ``image_text``: each training question with its image;
* ``text_only``: the same question with the image's description in its place (no image,
  and no dummy image either: a text-only batch carries no ``pixel_values``);
* ``mixed``: both versions of every question.

A run directory holds ``checkpoints/`` while it runs (the same command resumes from the
last one; ``force`` or a changed fingerprint starts anew), then the adapter, the loss curve,
token counts, wall time, peak memory, energy and provenance; ``run.json`` is written last and
marks the run finished. Each segment of a run (a resumed run has several) is recorded in
``segments.json`` as it goes; ``run.json`` sums their time and energy.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from textonly.core.energy import EMISSIONS_FILE
from textonly.core.errors import TextonlyError
from textonly.core.fileio import build_key, module_sources, dumps_json, dumps_jsonl, finished_build, write_text_atomic
from textonly.core.prompts import ANSWER_FORMATS, DEFAULT_DESCRIPTION, TRAIN_MODES, check_descriptions, mcq_messages

RUN_FILE = "run.json"  # written last: the run is finished
STARTED_FILE = "run_started.json"  # the fingerprint of the run the folder's checkpoints belong to
SEGMENTS_FILE = "segments.json"  # time, energy and memory of each segment (a resumed run has several)
CHECKPOINTS = "checkpoints"
#: What a run writes into its folder; a run started anew deletes them first.
RUN_OUTPUTS = (CHECKPOINTS, "adapter", "curves.jsonl", RUN_FILE, SEGMENTS_FILE, EMISSIONS_FILE)

#: Training presets. ``paper``: the setting reported for the paper (AdamW, lr 3e-5,
#: batch 1 x accumulation 32, 5 epochs; answers by letter); ``embedded``: for the small
#: embedded models, which answer with the option's text (chosen on the worlds' ``val``
#: split: ``benchmarks/recipe.py``).
PRESETS = {
    "paper": dict(learning_rate=3e-5, batch_size=1, grad_accum=32, epochs=5, lora_r=16, lora_alpha=32,
                  warmup_ratio=0.03, answer_format="letter"),
    # chosen on val by benchmarks/recipe.py (book/measured/recipe.json: lr {1e-3, 3e-3} x epochs
    # {5, 15}, rank 16; the best was the grid's corner, so the grid may be too small)
    "embedded": dict(learning_rate=3e-3, batch_size=8, grad_accum=1, epochs=15, lora_r=16, lora_alpha=32,
                     warmup_ratio=0.1, answer_format="option"),
}


@dataclass
class TrainConfig:
    """Everything that determines a fine-tuning run (its hash names the run)."""

    data: str
    model: str
    mode: str = "text_only"
    seed: int = 0
    preset: str = "embedded"
    description: str = DEFAULT_DESCRIPTION  # which of a record's ``descriptions`` stands in for its image
    learning_rate: float | None = None  # None: from the preset (likewise below)
    batch_size: int | None = None
    grad_accum: int | None = None
    epochs: float | None = None
    lora_r: int | None = None
    lora_alpha: int | None = None
    warmup_ratio: float | None = None
    answer_format: str | None = None  # "option" or "letter" (see textonly.core.prompts.ANSWER_FORMATS)
    max_steps: int = -1  # > 0 stops early (smoke runs and tests)
    save_steps: int = 10
    quantization: str | None = None  # "4bit": QLoRA through bitsandbytes

    def resolved(self) -> "TrainConfig":
        """The config with every preset value filled in (what the run records)."""
        if self.preset not in PRESETS:
            raise TextonlyError(f"--preset {self.preset}: choose from {', '.join(PRESETS)}")
        if self.mode not in TRAIN_MODES:
            raise TextonlyError(f"--mode {self.mode}: choose from {', '.join(TRAIN_MODES)} "
                                "('original' means no training: evaluate the model itself)")
        filled = {k: v if getattr(self, k) is None else getattr(self, k) for k, v in PRESETS[self.preset].items()}
        if filled["answer_format"] not in ANSWER_FORMATS:
            raise TextonlyError(f"--answer-format {filled['answer_format']}: choose from {', '.join(ANSWER_FORMATS)}")
        return replace(self, **filled)


def training_samples(records: list[dict], mode: str, description: str) -> list[tuple[dict, str]]:
    """(record, condition) pairs a mode trains on; a missing description is an error, not a skip."""
    if mode in ("text_only", "mixed"):
        check_descriptions(records, description)
    if mode == "image_text":
        return [(r, "image") for r in records]
    if mode == "text_only":
        return [(r, "description") for r in records]
    return [(r, c) for r in records for c in ("image", "description")]


class Collator:
    """Chat-formatted batches with the loss on the answer only, for any VLM processor.

    The prompt is rendered by the model's own chat template; the prompt's length in
    tokens (image tokens expanded by the processor) marks where the answer starts.
    """

    def __init__(self, processor, root: Path, description: str, answer_format: str = "letter"):
        self.processor = processor
        self.root = root
        self.description = description
        self.answer_format = answer_format

    def _image(self, record: dict):
        from textonly.data.images import load_image
        from textonly.data.layout import IMAGES

        return load_image(self.root / IMAGES, record["image_path"])

    def encode(self, samples: list[tuple[dict, str]]) -> dict:
        full, prompts, images = [], [], []
        for record, condition in samples:
            messages = mcq_messages(record, condition, self.description, answer=True, answer_format=self.answer_format)
            full.append(self.processor.apply_chat_template(messages))
            prompts.append(self.processor.apply_chat_template(messages[:-1], add_generation_prompt=True))
            if condition == "image" and record.get("image_path") is not None:
                images.append(self._image(record))
        kwargs = {"images": images} if images else {}  # a text-only batch gets no image at all
        batch = self.processor(text=full, return_tensors="pt", padding=True, padding_side="right", **kwargs)
        prompt_ids = self.processor(text=prompts, padding=False, **kwargs)["input_ids"]
        labels = batch["input_ids"].clone()
        labels[batch["attention_mask"] == 0] = -100
        for row, ids in enumerate(prompt_ids):
            if batch["input_ids"][row, : len(ids)].tolist() != list(ids):
                raise TextonlyError("the chat template's prompt is not a prefix of the training conversation")
            labels[row, : len(ids)] = -100
        batch["labels"] = labels
        return dict(batch)

    __call__ = encode


def load_for_training(config: TrainConfig):
    """The model with LoRA on its language model (and the projector trained in full), and its processor."""
    from peft import get_peft_model

    from textonly.models.hub import load_model
    from textonly.models.lora import lora_config

    model, processor = load_model(config.model, quantization=config.quantization)
    if config.quantization:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = get_peft_model(model, lora_config(r=config.lora_r, alpha=config.lora_alpha))
    return model, processor


def parameter_parts(model) -> dict:
    """Parameters of the vision tower, projector and language model (for FLOP counts), any architecture.

    LLaVA and LLaVA-NeXT name them ``vision_tower`` / ``multi_modal_projector`` /
    ``language_model``; Qwen2-VL keeps its projector (``merger``) inside ``visual``.
    """
    from textonly.organism.vlm import size_summary

    parts = size_summary(model)
    if not parts["vision_tower"]:
        for name, p in model.named_parameters():
            if ".visual." in f".{name}":
                parts["multi_modal_projector" if ".merger." in name else "vision_tower"] += p.numel()
    # LoRA and saved copies are counted in total but belong to no part of the base model
    return parts


def fingerprint(config: TrainConfig) -> str:
    from textonly.core.provenance import data_hash, model_identity

    from textonly.core import flops, prompts
    from textonly.models import lora
    from textonly.organism import vlm

    code = module_sources(sys.modules[__name__], prompts, flops, lora, vlm)
    return build_key(asdict(config), data_hash(config.data), model_identity(config.model), *code)


def device() -> str:
    """Where training runs, and so where its adapter is evaluated: ``cuda`` when available, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def prepare_folder(out: Path, key: str, config: TrainConfig, force: bool) -> None:
    """Make ``out`` ready for the run ``key``; its checkpoints are kept only if they are this run's.

    ``force``, or a folder holding a run of another fingerprint (its config, data, model or
    code changed), starts anew: the earlier run's outputs are deleted, and a warning says so.
    """
    started = out / STARTED_FILE
    try:
        previous = json.loads(started.read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        previous = None
    earlier = [out / name for name in RUN_OUTPUTS if (out / name).exists()]
    if force:
        reason = "forced"
    elif previous not in (None, key):
        reason = "its earlier run had another config, data, model or code"
    else:
        reason = None  # this run's own checkpoints, or none
    if reason and earlier:
        warnings.warn(f"{out}: training starts anew ({reason}); deleting the earlier run's "
                      f"{', '.join(p.name for p in earlier)}", stacklevel=3)
        for path in earlier:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(started, dumps_json({"fingerprint": key, "config": asdict(config)}))


def epoch_tokens(processor, collator: Collator, samples: list[tuple[dict, str]], model_config,
                 lora_r: int) -> dict:
    """Text and image tokens of one epoch, padding excluded, and the training FLOPs of the
    epoch's samples (:func:`textonly.core.flops.batch_flops`, the study's one formula).

    Counted once up front: resuming skips batches, so counting during training would
    depend on where a run was interrupted.
    """
    from textonly.core.flops import batch_flops
    from textonly.models.scoring import token_counts

    text = image = flops = 0
    for i in range(0, len(samples), 16):
        batch = collator(samples[i:i + 16])
        t, im = token_counts(processor, batch)
        text, image, flops = text + t, image + im, flops + batch_flops(model_config, batch, lora_r=lora_r)
    return {"text_per_epoch": text, "image_per_epoch": image, "flops_per_epoch": flops}


def make_trainer(config: TrainConfig, out: Path, model, samples: list, collator: Collator, callbacks: list,
                 progress: bool):
    """transformers' ``Trainer`` with the run's settings, checkpointing into ``out/checkpoints``."""
    from transformers import Trainer, TrainingArguments

    use_cuda = device() == "cuda"
    args = TrainingArguments(
        output_dir=str(out / CHECKPOINTS), per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, num_train_epochs=config.epochs, max_steps=config.max_steps,
        learning_rate=config.learning_rate, warmup_steps=config.warmup_ratio, lr_scheduler_type="cosine",
        optim="adamw_torch", weight_decay=0.0, logging_steps=1, save_strategy="steps", save_steps=config.save_steps,
        save_total_limit=2, seed=config.seed, data_seed=config.seed, report_to=[], remove_unused_columns=False,
        use_cpu=not use_cuda, bf16=use_cuda and torch.cuda.is_bf16_supported(), dataloader_num_workers=0,
        disable_tqdm=not progress,
    )
    return Trainer(model=model, args=args, train_dataset=samples, data_collator=collator, callbacks=callbacks)


def train(config: TrainConfig, out: str | Path, *, callbacks: list | None = None, progress: bool = True,
          force: bool = False) -> dict:
    """Run (or resume, or find finished) one fine-tuning run in ``out``; returns its ``run.json``.

    A folder holding this run's checkpoints resumes from the last one; ``force`` or a changed
    fingerprint starts anew (:func:`prepare_folder`).
    """
    from transformers import set_seed
    from transformers.trainer_utils import get_last_checkpoint

    from textonly.core.energy import track
    from textonly.core.provenance import provenance
    from textonly.data.layout import load_dataset

    config = config.resolved()
    load_dataset(config.data, check_images=False)  # a bad folder fails in one line before it is hashed
    out = Path(out)
    key = fingerprint(config)
    if not force and finished_build(out / RUN_FILE, key):
        return json.loads((out / RUN_FILE).read_text())
    prepare_folder(out, key, config, force)
    dataset = load_dataset(config.data)
    samples = training_samples(dataset.records, config.mode, config.description)
    set_seed(config.seed)  # LoRA's random init happens before Trainer seeds anything
    model, processor = load_for_training(config)
    collator = Collator(processor, Path(config.data), config.description, config.answer_format)
    tokens = epoch_tokens(processor, collator, samples, model.config, config.lora_r)
    resume = get_last_checkpoint(str(out / CHECKPOINTS)) if (out / CHECKPOINTS).is_dir() else None
    segment = segment_recorder(out, int(Path(resume).name.split("-")[-1]) if resume else 0)
    trainer = make_trainer(config, out, model, samples, collator, [segment, *(callbacks or [])], progress)
    energy = None
    segment.begin()
    try:
        with track("train", out) as energy:
            result = trainer.train(resume_from_checkpoint=resume)
    finally:  # an interrupted segment keeps its cost too
        segment.end(energy)
    trainer.model.save_pretrained(out / "adapter")
    history = loss_history(trainer)
    write_text_atomic(out / "curves.jsonl", dumps_jsonl(history))
    summary = {"fingerprint": key, "config": asdict(config), "samples": len(samples),
               "questions": len(dataset.records), "resumed_from": resume and Path(resume).name,
               **run_record(trainer, result.training_loss, history, tokens), **segment_totals(segment.segments),
               "provenance": provenance(seed=config.seed, data=config.data),
               "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_text_atomic(out / RUN_FILE, dumps_json(summary))
    return summary


def loss_history(trainer) -> list[dict]:
    """The loss at every step; a resumed run's earlier steps come from its checkpoint's log."""
    return [{"step": h["step"], "epoch": round(h.get("epoch", 0), 4), "loss": h["loss"], "lr": h.get("learning_rate")}
            for h in trainer.state.log_history if "loss" in h]


def run_record(trainer, train_loss: float, history: list[dict], tokens: dict) -> dict:
    """What ``run.json`` says of the training: steps, losses, tokens seen and the model's parameters."""
    epochs = trainer.state.epoch or 0.0
    return {
        "steps": trainer.state.global_step, "epochs": epochs,
        "final_loss": history[-1]["loss"] if history else None, "train_loss": train_loss,
        "tokens": {"text_per_epoch": tokens["text_per_epoch"], "image_per_epoch": tokens["image_per_epoch"],
                   "text": round(tokens["text_per_epoch"] * epochs), "image": round(tokens["image_per_epoch"] * epochs)},
        "flops": {"per_epoch": tokens["flops_per_epoch"], "total": round(tokens["flops_per_epoch"] * epochs)},
        "trainable_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "parameters": parameter_parts(trainer.model),
    }


def read_segments(out: Path) -> list[dict]:
    """The segments recorded in ``out`` so far (none before a run's first start)."""
    try:
        return json.loads((out / SEGMENTS_FILE).read_text())
    except (OSError, ValueError):
        return []


def segment_recorder(out: Path, from_step: int):
    """A ``TrainerCallback`` that records this segment (from ``from_step``) in ``segments.json``.

    The entry is written when the segment begins, at every step and at its end, so a segment
    killed mid-run still counts with its time, steps and peak memory up to its last step; its
    energy, which codecarbon gives at the end only, stays ``None``.
    """
    from transformers import TrainerCallback

    from textonly.core.memory import PeakMemory

    class Segment(TrainerCallback):
        def __init__(self):
            self.entry = {"from_step": from_step, "to_step": from_step, "seconds": 0.0, "energy": None,
                          "peak_memory_mb": None}
            self.segments = read_segments(out) + [self.entry]
            self.meter = PeakMemory()
            self.started = time.perf_counter()

        def begin(self) -> None:
            self.meter.start()
            self.started = time.perf_counter()
            self._save(self.meter.peak())

        def on_step_end(self, args, state, control, **kwargs):
            self.entry["to_step"] = state.global_step
            self._save(self.meter.peak())

        def end(self, energy: dict | None) -> None:
            self.entry["energy"] = energy
            self._save(self.meter.stop(), seconds=energy["seconds"] if energy else None)

        def _save(self, memory: dict, seconds: float | None = None) -> None:
            elapsed = round(time.perf_counter() - self.started, 3)
            self.entry.update(seconds=elapsed if seconds is None else seconds, peak_memory_mb=memory)
            write_text_atomic(out / SEGMENTS_FILE, dumps_json(self.segments))

    return Segment()


def segment_totals(segments: list[dict]) -> dict:
    """A run's cost over all its segments: wall time and energy summed, peak memory the highest.

    ``energy`` sums the segments whose energy was recorded (``measured_segments`` of
    ``segments``; a killed segment has none), and its ``seconds`` are theirs.
    """
    measured = [s["energy"] for s in segments if s.get("energy")]
    energy: dict = {"phase": "train", "segments": len(segments), "measured_segments": len(measured)}
    for name in ("seconds", "energy_kwh", "emissions_kg", "gpu_energy_kwh_nvml"):
        values = [e.get(name) for e in measured]
        energy[name] = sum(values) if values and None not in values else None
    energy["energy_mode"] = "; ".join(dict.fromkeys(e["energy_mode"] for e in measured)) or None
    peaks = [s["peak_memory_mb"] for s in segments if s.get("peak_memory_mb")]
    memory = {kind: max((p[kind] for p in peaks if p.get(kind) is not None), default=None)
              for kind in ("process_rss", "gpu")}
    return {"wall_seconds": round(sum(s["seconds"] for s in segments), 3), "energy": energy,
            "peak_memory_mb": memory, "segments": len(segments)}
