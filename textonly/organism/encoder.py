"""The organism's vision encoder: a CLIP model pretrained on its own, then frozen in the VLM.

As real VLMs take a contrastively pretrained CLIP tower, the organism's LLaVA takes the
vision half of a ``CLIPModel`` trained here on rendered images of *generic individuals*
and *pretraining kinds* of both worlds with their captions (no image of a target kind,
ever), with a multi-positive contrastive loss and an auxiliary attribute loss.

The encoder is built once per world seed and size and reused by every base model and
seed. This module trains it (:func:`pretrain_encoder`); its parts:

* :mod:`~textonly.organism.encoder_config`: its sizes and settings, and where it lives;
* :mod:`~textonly.organism.encoder_material`: the rendered look-alike families and captions;
* :mod:`~textonly.organism.encoder_model`: the CLIP model, its losses and its batches;
* :mod:`~textonly.organism.encoder_probes`: what its card reports (zero-shot and linear-probe
  accuracy per attribute).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from textonly.core.errors import TextonlyError
from textonly.core.fileio import (atomic_directory, build_key, dumps_json, dumps_jsonl, finished_build, module_sources,
                                  save_checkpoint)
from textonly.organism.encoder_config import WORLD_NAMES, EncoderConfig, world_seed
from textonly.organism.encoder_material import encoder_material
from textonly.organism.encoder_model import (Batches, _features, attribute_loss, build_tokenizer, make_model,
                                             make_processor, multi_positive_loss, patch_features)
from textonly.organism.encoder_probes import evaluate_encoder
from textonly.organism.worlds.vocab import WORLDS


def fingerprint(config: EncoderConfig, tokenizer) -> str:
    """Hash of the config, the worlds, the tokenizer's vocabulary and the code that renders and
    trains: same hash, same encoder. (The vocabulary counts by its content, so an edit to the
    tokenizer's code that leaves it unchanged does not rebuild the encoder.)"""
    worlds = [json.loads((Path(config.worlds) / name / "world.json").read_text())["fingerprint"]
              for name in WORLD_NAMES]
    from textonly.organism import encoder_config, encoder_material, encoder_model, encoder_probes
    from textonly.organism import worlds as worlds_package

    code = module_sources(sys.modules[__name__], encoder_config, encoder_material, encoder_model, encoder_probes,
                          worlds_package)
    settings = {k: v for k, v in asdict(config).items() if k not in ("worlds", "checkpoint_every")}
    return build_key(settings, tokenizer.backend_tokenizer.to_str(), *worlds, *code)


def _lr_lambda(steps: int, warmup: int):
    return lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, s / steps)))


class _Training:
    """The encoder's training state: the CLIP model and the auxiliary attribute heads (one per
    world, trained beside it and not kept), the optimizer and its schedule, the random streams
    that draw and augment the batches, and the curves."""

    def __init__(self, config: EncoderConfig, model, key: str):
        self.config, self.model, self.key = config, model, key
        self.steps = config.resolved_steps()
        self.heads = torch.nn.ModuleDict({name: torch.nn.Linear(model.config.vision_config.hidden_size,
                                                                sum(len(a.values) for a in WORLDS[name].attributes))
                                          for name in WORLD_NAMES})
        self.trainee = torch.nn.ModuleDict({"clip": model, "heads": self.heads})
        # no weight decay on gains, biases, embeddings' scale or the temperature (as CLIP)
        decayed = [p for p in self.trainee.parameters() if p.ndim >= 2]
        kept = [p for p in self.trainee.parameters() if p.ndim < 2]
        self.optimizer = torch.optim.AdamW([{"params": decayed, "weight_decay": config.weight_decay},
                                            {"params": kept, "weight_decay": 0.0}],
                                           lr=config.learning_rate, betas=(0.9, 0.98))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _lr_lambda(self.steps, max(1, int(config.warmup_fraction * self.steps))))
        self.rng = np.random.default_rng([config.seed, 5])
        self.generator = torch.Generator().manual_seed(config.seed)
        self.start, self.curves = 0, []

    def resume(self, checkpoint: Path) -> None:
        """Go on from ``checkpoint`` when this same build (the same fingerprint) wrote it."""
        state = torch.load(checkpoint, weights_only=False)
        if state.get("fingerprint") == self.key:
            self.trainee.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.rng.bit_generator.state = state["rng"]
            self.generator.set_state(state["generator"])
            self.start, self.curves = state["step"], state["curves"]

    def save(self, checkpoint: Path, step: int) -> None:
        save_checkpoint(checkpoint, {
            "model": self.trainee.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "step": step, "rng": self.rng.bit_generator.state,
            "generator": self.generator.get_state(), "curves": self.curves, "fingerprint": self.key})

    def run(self, batches: list[Batches], checkpoint: Path, progress: bool) -> None:
        """Train from the current step to the last, keeping a checkpoint every ``checkpoint_every`` steps."""
        self.trainee.train()
        bar = tqdm(range(self.start, self.steps), desc=f"pretraining the {self.config.size} encoder", unit="step",
                   disable=not progress, initial=self.start, total=self.steps)
        for step in bar:
            contrastive, attribute = self.step(step, batches)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{contrastive:.3f}", attributes=f"{attribute:.3f}")
            if (step + 1) % self.config.checkpoint_every == 0 and step + 1 < self.steps:
                self.save(checkpoint, step + 1)
        self.trainee.eval()

    def step(self, step: int, batches: list[Batches]) -> tuple[float, float]:
        """One optimizer step on a batch of the world whose turn it is; its contrastive and attribute losses."""
        world = WORLD_NAMES[step % len(batches)]
        batch = batches[step % len(batches)].draw(self.rng, self.generator)
        contrastive, attribute = self.losses(batch, world)
        loss = contrastive + self.config.attribute_loss_weight * attribute
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.trainee.parameters(), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(loss.item()):
            raise TextonlyError(f"encoder pretraining diverged at step {step}: loss {loss.item()}")
        self.curves.append({"step": step, "world": world, "loss": round(contrastive.item(), 5),
                            "attribute_loss": round(attribute.item(), 5), "lr": self.scheduler.get_last_lr()[0]})
        return contrastive.item(), attribute.item()

    def losses(self, batch: dict, world: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The multi-positive contrastive loss of the batch and its auxiliary attribute loss."""
        model = self.model
        seen = model.vision_model(pixel_values=batch["pixel_values"], output_hidden_states=True)
        image = torch.nn.functional.normalize(model.visual_projection(seen.pooler_output), dim=-1)
        text = _features(model, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        logits = model.logit_scale.exp().clamp(max=100) * image @ text.t()
        contrastive = multi_positive_loss(logits, batch["positive"])
        attribute = attribute_loss(self.heads[world](patch_features(seen)), batch["codes"], WORLDS[world])
        return contrastive, attribute


def pretrain_encoder(config: EncoderConfig, out: str | Path, *, force: bool = False, progress: bool = True) -> Path:
    """Pretrain (or find already pretrained, or resume) the CLIP encoder into ``out``; returns ``out``.

    A checkpoint is kept beside ``out`` (``<out>.checkpoint.pt``) every ``checkpoint_every``
    steps; a killed run started again with the same config resumes from it and ends with
    the weights an uninterrupted run would have.
    """
    config.validate()
    out = Path(out)
    started = time.perf_counter()
    tokenizer = build_tokenizer(config.worlds)
    key = fingerprint(config, tokenizer)
    if not force and finished_build(out / "encoder_config.json", key) and (out / "model.safetensors").is_file():
        return out
    processor = make_processor(tokenizer, config.image_size)
    model = make_model(config, tokenizer)
    render_start = time.perf_counter()
    batches = [Batches(encoder_material(config, name, progress=progress), tokenizer, config) for name in WORLD_NAMES]
    seconds = {"render": time.perf_counter() - render_start}
    training = _Training(config, model, key)  # after the model: the heads draw from torch's generator next
    checkpoint = out.parent / f"{out.name}.checkpoint.pt"
    if checkpoint.is_file() and not force:
        training.resume(checkpoint)
    train_start = time.perf_counter()
    training.run(batches, checkpoint, progress)
    seconds["train"] = time.perf_counter() - train_start
    report = evaluate_encoder(model, processor, config, progress=progress)
    _write_encoder(out, training, processor, report, batches, seconds, started)
    checkpoint.unlink(missing_ok=True)
    return out


def _write_encoder(out: Path, training: _Training, processor, report: dict, batches: list[Batches],
                   seconds: dict, started: float) -> None:
    """The encoder's folder: the model and processor, curves, probe report, config and card."""
    from textonly.organism.cards import write_encoder_card

    model, config = training.model, training.config
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "curves.jsonl").write_text(dumps_jsonl(training.curves), encoding="utf-8")
        (tmp / "report.json").write_text(dumps_json(report), encoding="utf-8")
        (tmp / "encoder_config.json").write_text(dumps_json({
            "fingerprint": training.key, "config": asdict(config), "steps": training.steps,
            "world_seed": world_seed(config.worlds),
            "parameters": {"vision": sum(p.numel() for p in model.vision_model.parameters()),
                           "text": sum(p.numel() for p in model.text_model.parameters()),
                           "total": sum(p.numel() for p in model.parameters())},
            "images": {name: len(b.m.captions) for name, b in zip(WORLD_NAMES, batches)},
            "seconds": {"render": round(seconds["render"], 1), "train": round(seconds["train"], 1),
                        "total": round(time.perf_counter() - started, 1)},
            "resumed_at_step": training.start or None, "torch_threads": torch.get_num_threads(),
        }), encoding="utf-8")
        write_encoder_card(tmp)
