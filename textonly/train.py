"""Fine-tune a VLM on a multiple-choice dataset: ``image_text``, ``text_only`` or ``mixed``.

The paper's method: LoRA on the language model (regex-targeted) plus the projector
trained in full, the vision tower frozen, transformers' ``Trainer`` doing the loop.

* ``image_text``: each training question with its image;
* ``text_only``: the same question with the image's description in its place (no image,
  and no dummy image either: a text-only batch carries no ``pixel_values``);
* ``mixed``: both versions of every question.

A run directory holds ``checkpoints/`` while it runs (the same command resumes from the
last one), then the adapter, the loss curve, token counts, wall time, peak memory, energy
and provenance; ``run.json`` is written last and marks the run finished.
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from textonly.errors import TextonlyError
from textonly.fileio import build_key, dumps_json, dumps_jsonl, finished_build, write_text_atomic
from textonly.prompts import ANSWER_FORMATS, mcq_messages

MODES = ("image_text", "text_only", "mixed")
RUN_FILE = "run.json"

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
    describer: str = "full"  # which of a record's ``descriptions`` stands in for its image
    learning_rate: float | None = None  # None: from the preset (likewise below)
    batch_size: int | None = None
    grad_accum: int | None = None
    epochs: float | None = None
    lora_r: int | None = None
    lora_alpha: int | None = None
    warmup_ratio: float | None = None
    answer_format: str | None = None  # "option" or "letter" (see textonly.prompts.ANSWER_FORMATS)
    max_steps: int = -1  # > 0 stops early (smoke runs and tests)
    save_steps: int = 10
    quantization: str | None = None  # "4bit": QLoRA through bitsandbytes

    def resolved(self) -> "TrainConfig":
        """The config with every preset value filled in (what the run records)."""
        if self.preset not in PRESETS:
            raise TextonlyError(f"--preset {self.preset}: choose from {', '.join(PRESETS)}")
        if self.mode not in MODES:
            raise TextonlyError(f"--mode {self.mode}: choose from {', '.join(MODES)} "
                                "('original' means no training: evaluate the model itself)")
        filled = {k: v if getattr(self, k) is None else getattr(self, k) for k, v in PRESETS[self.preset].items()}
        if filled["answer_format"] not in ANSWER_FORMATS:
            raise TextonlyError(f"--answer-format {filled['answer_format']}: choose from {', '.join(ANSWER_FORMATS)}")
        return replace(self, **filled)


def training_samples(records: list[dict], mode: str, describer: str) -> list[tuple[dict, str]]:
    """(record, condition) pairs a mode trains on; a missing description is an error, not a skip."""
    if mode in ("text_only", "mixed"):
        missing = [r["id_"] for r in records if describer not in (r.get("descriptions") or {})]
        if missing:
            raise TextonlyError(f"{len(missing)} questions have no {describer!r} description (first: {missing[0]}); "
                                "convert the dataset first: python -m textonly convert")
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

    def __init__(self, processor, root: Path, describer: str, answer_format: str = "letter"):
        self.processor = processor
        self.root = root
        self.describer = describer
        self.answer_format = answer_format

    def _image(self, record: dict):
        from PIL import Image

        with Image.open(self.root / "images" / record["image_path"]) as image:
            return image.convert("RGB")

    def encode(self, samples: list[tuple[dict, str]]) -> dict:
        full, prompts, images = [], [], []
        for record, condition in samples:
            messages = mcq_messages(record, condition, self.describer, answer=True, answer_format=self.answer_format)
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

    from textonly.hub import load_model
    from textonly.vlm import lora_config

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
    from textonly.vlm import size_summary

    parts = size_summary(model)
    if not parts["vision_tower"]:
        for name, p in model.named_parameters():
            if ".visual." in f".{name}":
                parts["multi_modal_projector" if ".merger." in name else "vision_tower"] += p.numel()
    # LoRA and saved copies are counted in total but belong to no part of the base model
    return parts


def fingerprint(config: TrainConfig) -> str:
    from textonly.provenance import data_hash, model_identity

    code = [(Path(__file__).parent / m).read_bytes() for m in ("train.py", "prompts.py", "vlm.py")]
    return build_key(asdict(config), data_hash(config.data), model_identity(config.model), *code)


def train(config: TrainConfig, out: str | Path, *, callbacks: list | None = None, progress: bool = True,
          force: bool = False) -> dict:
    """Run (or resume, or find finished) one fine-tuning run in ``out``; returns its ``run.json``."""
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    from textonly.data import load_dataset
    from textonly.energy import track
    from textonly.evaluate import token_counts
    from textonly.provenance import provenance

    config = config.resolved()
    out = Path(out)
    key = fingerprint(config)
    if not force and finished_build(out / RUN_FILE, key):
        return json.loads((out / RUN_FILE).read_text())
    started = out / "run_started.json"
    if started.is_file() and json.loads(started.read_text()).get("fingerprint") != key:
        raise TextonlyError(f"{out} holds an unfinished run of a different config; choose another --out "
                            "or delete that folder")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(started, dumps_json({"fingerprint": key, "config": asdict(config)}))

    dataset = load_dataset(config.data)
    samples = training_samples(dataset.records, config.mode, config.describer)
    from transformers import set_seed

    set_seed(config.seed)  # LoRA's random init happens before Trainer seeds anything
    model, processor = load_for_training(config)
    collator = Collator(processor, Path(config.data), config.describer, config.answer_format)
    # tokens per epoch, counted once up front (resuming skips batches, so counting during
    # training would depend on where a run was interrupted)
    epoch_text = epoch_image = 0
    for i in range(0, len(samples), 16):
        t, im = token_counts(processor, collator(samples[i:i + 16]))
        epoch_text, epoch_image = epoch_text + t, epoch_image + im

    use_cuda = torch.cuda.is_available()
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"), per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, num_train_epochs=config.epochs, max_steps=config.max_steps,
        learning_rate=config.learning_rate, warmup_steps=config.warmup_ratio, lr_scheduler_type="cosine",
        optim="adamw_torch", weight_decay=0.0, logging_steps=1, save_strategy="steps", save_steps=config.save_steps,
        save_total_limit=2, seed=config.seed, data_seed=config.seed, report_to=[], remove_unused_columns=False,
        use_cpu=not use_cuda, bf16=use_cuda and torch.cuda.is_bf16_supported(), dataloader_num_workers=0,
        disable_tqdm=not progress,
    )
    trainer = Trainer(model=model, args=args, train_dataset=samples, data_collator=collator,
                      callbacks=callbacks)
    resume = get_last_checkpoint(str(out / "checkpoints")) if (out / "checkpoints").is_dir() else None
    if use_cuda:
        torch.cuda.reset_peak_memory_stats()
    with track("train", out) as energy:
        result = trainer.train(resume_from_checkpoint=resume)
    # the log history holds every step, a resumed run's earlier ones from its checkpoint
    history = [{"step": h["step"], "epoch": round(h.get("epoch", 0), 4), "loss": h["loss"],
                "lr": h.get("learning_rate")} for h in trainer.state.log_history if "loss" in h]
    epochs_done = trainer.state.epoch or 0.0
    trainer.model.save_pretrained(out / "adapter")
    write_text_atomic(out / "curves.jsonl", dumps_jsonl(history))
    summary = {
        "fingerprint": key, "config": asdict(config), "samples": len(samples), "questions": len(dataset.records),
        "steps": trainer.state.global_step, "epochs": epochs_done, "resumed_from": resume and Path(resume).name,
        "final_loss": history[-1]["loss"] if history else None, "train_loss": result.training_loss,
        "tokens": {"text_per_epoch": epoch_text, "image_per_epoch": epoch_image,
                   "text": round(epoch_text * epochs_done), "image": round(epoch_image * epochs_done)},
        "wall_seconds": energy["seconds"], "energy": energy,
        "peak_memory_mb": {"process_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                           "gpu": torch.cuda.max_memory_allocated() / 2**20 if use_cuda else None},
        "trainable_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "parameters": parameter_parts(trainer.model),
        "provenance": provenance(seed=config.seed, data=config.data),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_text_atomic(out / RUN_FILE, dumps_json(summary))
    return summary
