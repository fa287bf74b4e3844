"""Pretrain the embedded base VLM on both worlds' pretraining material, offline, in stages.

The recipe follows how LLaVA-style VLMs are made:

0. *vision encoder*: a CLIP model pretrained on its own (:mod:`textonly.organism.encoder`), built
   once per world seed and size; its vision tower joins the VLM frozen;
1. *language*: packed sentences of world text (facts, appearances, look-alikes);
2. *alignment*: image -> caption of generic individuals and pretraining kinds (the
   projector learns to hand the tower's patches to the language model);
3. *instruction*: multiple-choice questions in the study's prompt format, answered in the
   ``option`` format (the option's text; see :mod:`textonly.models.scoring`): attribute and
   which-kind questions with images, knowledge questions in text, the same conversations
   with the caption in place of the image, and replay of the first two stages.

``image_start_fraction`` F is the fraction of the language batches done before images
appear (arXiv 2503.07603): the first F of them run alone, then the remaining language
batches and all alignment batches are interleaved at random; instruction comes last.
F = 1 is the LLaVA recipe (images after full language pretraining). The total number of
steps does not depend on F. The projector and the language model train in every image
stage (LLaVA's first stage trains the projector alone; here the language model is small
and its pretraining short, so it learns the captions' words with the projector).

The material and its samples are in :mod:`~textonly.organism.pretrain_samples` (with what
the base model is told of the study's targets); what the base model knows afterwards, in
:mod:`~textonly.organism.pretrain_probes`.

Pretraining keeps a checkpoint beside its output every ``checkpoint_every`` steps; the same
command after a kill resumes there and ends with the weights an uninterrupted run has.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from textonly.organism.cards import write_model_card
from textonly.core.errors import TextonlyError
from textonly.core.flops import batch_flops
from textonly.core.fileio import (atomic_directory, build_key, module_sources, dumps_json, dumps_jsonl, finished_build,
                                  save_checkpoint)
from textonly.organism.pretrain_probes import evaluate_base
from textonly.organism.pretrain_samples import WORLD_NAMES, Material, Samples, collate, gather_material
from textonly.organism.tokenizer import VOCAB_SIZE, world_tokenizer

PHASES = ("language", "alignment", "instruction")
PRECISIONS = ("fp32", "bf16")  # bf16: autocast on CPU

#: (language, alignment, instruction) steps per size at the default batch size.
DEFAULT_STEPS = {"tiny": (150, 100, 150), "small": (400, 200, 300), "base": (800, 400, 600)}


@dataclass
class PretrainConfig:
    """Everything that determines a pretrained base model (its hash names the build)."""

    size: str = "small"
    seed: int = 0
    image_start_fraction: float = 1.0
    worlds: str = "data/worlds"
    vocab_size: int = VOCAB_SIZE
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.03
    decay_fraction: float = 0.15
    steps: tuple[int, int, int] | None = None  # (language, alignment, instruction); None: per size
    target_appearance_fraction: float = 0.5
    statements_per_sample: int = 6
    # shares of an instruction batch: replayed language/alignment samples, text knowledge
    # questions, questions with the caption in place of the image; the rest have images
    replay_fraction: float = 0.15
    knowledge_fraction: float = 0.2
    described_fraction: float = 0.15
    precision: str = "fp32"  # bf16 autocast measured no faster at these sizes on CPU
    #: Questions per instruction conversation (an image's questions are split into several):
    #: every turn repeats the study's prompt, so long conversations cost much for few answers.
    turns_per_conversation: int = 3
    #: Settings of the vision encoder (:class:`textonly.organism.encoder_config.EncoderConfig` fields; its
    #: size is this model's). The defaults make the one shared encoder of the size.
    encoder: dict = field(default_factory=dict)
    checkpoint_every: int = 100

    def resolved_steps(self) -> tuple[int, int, int]:
        return tuple(self.steps) if self.steps else DEFAULT_STEPS[self.size]

    def encoder_config(self):
        """The :class:`~textonly.organism.encoder_config.EncoderConfig` this model's vision tower comes from."""
        from textonly.organism.encoder_config import EncoderConfig

        return EncoderConfig(**{**self.encoder, "size": self.size, "worlds": self.worlds})

    def validate(self) -> None:
        from textonly.organism.vlm import MODEL_SIZES

        if self.size not in MODEL_SIZES:
            raise TextonlyError(f"--size {self.size}: choose from {', '.join(MODEL_SIZES)}")
        if not 0.0 <= self.image_start_fraction <= 1.0:
            raise TextonlyError(f"--image-start-fraction {self.image_start_fraction}: must be between 0 and 1")
        if self.precision not in PRECISIONS:
            raise TextonlyError(f"--precision {self.precision}: choose from {', '.join(PRECISIONS)}")
        self.encoder_config().validate()


def encoder_path(config: PretrainConfig, out: str | Path) -> Path:
    """The shared encoder beside the model folder ``out``: one per world seed and size (and settings)."""
    from textonly.organism.encoder_config import encoder_folder

    folder = encoder_folder(Path(out).parent, config.size, config.worlds)
    if config.encoder:  # non-default settings (smoke runs) get a folder of their own
        folder = folder.with_name(folder.name + "-" + build_key(config.encoder)[:8])
    return folder


def _pixel_values(processor, files: dict[str, Path], keys: list[str], progress: bool) -> torch.Tensor:
    from textonly.data.images import load_image

    out = []
    for start in tqdm(range(0, len(keys), 256), desc="preparing images", disable=not progress, unit="batch"):
        batch = [load_image(files[key].parent, files[key].name) for key in keys[start:start + 256]]
        out.append(processor.image_processor(batch, return_tensors="pt")["pixel_values"])
    return torch.cat(out)


def plan_schedule(config: PretrainConfig) -> list[str]:
    """The phase of each step: 'language', 'alignment' or 'instruction' (see the module's doc)."""
    n_lang, n_align, n_instr = config.resolved_steps()
    rng = np.random.default_rng([config.seed, 11])
    first = int(round(config.image_start_fraction * n_lang))
    mixed = ["language"] * (n_lang - first) + ["alignment"] * n_align
    mixed = [mixed[i] for i in rng.permutation(len(mixed))]
    return ["language"] * first + mixed + ["instruction"] * n_instr


def fingerprint(config: PretrainConfig, encoder_key: str, tokenizer) -> str:
    """Hash of the config, the worlds, the encoder, the vocabulary and the code that trains and
    probes: same hash, same model."""
    worlds = [json.loads((Path(config.worlds) / name / "world.json").read_text())["fingerprint"]
              for name in WORLD_NAMES]
    from textonly.core import prompts, stats
    from textonly.models import scoring
    from textonly.organism import pretrain_probes, pretrain_samples, vlm

    code = module_sources(sys.modules[__name__], pretrain_samples, pretrain_probes, vlm, prompts, stats, scoring)
    # the worlds count by their content (their fingerprints), not by how their path is spelled
    settings = {k: v for k, v in asdict(config).items() if k not in ("worlds", "checkpoint_every")}
    return build_key(settings, encoder_key, tokenizer.backend_tokenizer.to_str(), *worlds, *code)


def _checkpoint_file(out: Path) -> Path:
    return out.parent / f"{out.name}.checkpoint.pt"


def pretrain(config: PretrainConfig, out: str | Path, *, force: bool = False, progress: bool = True,
             evaluate: bool = True) -> Path:
    """Pretrain (or find already pretrained, or resume) a base VLM into ``out``; returns ``out``.

    The vision encoder it needs is built first when it is not on disk (beside ``out``).
    """
    from textonly.organism.encoder import pretrain_encoder

    config.validate()
    out = Path(out)
    started = time.perf_counter()
    encoder_dir = pretrain_encoder(config.encoder_config(), encoder_path(config, out), progress=progress)
    encoder_info = json.loads((encoder_dir / "encoder_config.json").read_text())
    tokenizer = world_tokenizer(config.worlds, config.vocab_size)
    key = fingerprint(config, encoder_info["fingerprint"], tokenizer)
    if not force and finished_build(out / "pretrain_config.json", key) and (out / "model.safetensors").is_file():
        return out
    encoder_seconds = time.perf_counter() - started
    torch.manual_seed(config.seed)
    material = gather_material(config)
    model, processor = _base_model(config, tokenizer, encoder_dir)
    keys = sorted(material.image_files)
    pixels = _pixel_values(processor, material.image_files, keys, progress)
    samples = Samples(config, material, processor, model.config.image_seq_length, {k: i for i, k in enumerate(keys)})
    run = _Run(config, model, key)
    checkpoint = _checkpoint_file(out)
    if checkpoint.is_file() and not force:
        run.resume(checkpoint)
    run.train(samples, pixels, tokenizer.pad_token_id, checkpoint, progress)
    encoder = {"folder": encoder_dir.name, "fingerprint": encoder_info["fingerprint"],
               "seconds": encoder_info["seconds"]}
    _write_model(out, run, processor, material, encoder, encoder_seconds, evaluate=evaluate, progress=progress)
    checkpoint.unlink(missing_ok=True)
    return out


def _base_model(config: PretrainConfig, tokenizer, encoder_dir: Path):
    """The base VLM (its language model and projector new) around the encoder's vision tower,
    frozen as in LLaVA, and its processor."""
    from transformers import CLIPModel

    from textonly.organism import vlm

    clip = CLIPModel.from_pretrained(encoder_dir)
    vision = clip.config.vision_config
    processor = vlm.make_processor(tokenizer, vision.image_size, vision.patch_size)
    model = vlm.make_model(config.size, tokenizer, vision=clip, seed=config.seed)
    model.model.vision_tower.requires_grad_(False)  # frozen, as in LLaVA
    return model, processor


class _Run:
    """A pretraining run's state: the model, its optimizer and schedule, the random stream that
    draws the batches, the curves, and the totals of tokens, images, FLOPs and seconds per phase."""

    def __init__(self, config: PretrainConfig, model, key: str):
        from transformers import get_wsd_schedule

        self.config, self.model, self.key = config, model, key
        self.schedule = plan_schedule(config)
        self.trained = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trained, lr=config.learning_rate, weight_decay=config.weight_decay,
                                           betas=(0.9, 0.95))
        # warmup-stable-decay: the rate stays high through instruction (a cosine has mostly
        # decayed by then) and anneals over the last decay_fraction of the steps
        warmup = max(1, int(config.warmup_fraction * len(self.schedule)))
        decay = max(1, int(config.decay_fraction * len(self.schedule)))
        self.scheduler = get_wsd_schedule(self.optimizer, num_warmup_steps=warmup, num_decay_steps=decay,
                                          num_training_steps=len(self.schedule))
        self.rng = np.random.default_rng([config.seed, 3])
        self.curves, self.totals = [], {"text_tokens": 0, "image_tokens": 0, "images": 0, "flops": 0.0}
        self.seconds = {phase: 0.0 for phase in PHASES}
        self.start = 0

    def resume(self, checkpoint: Path) -> None:
        """Go on from ``checkpoint`` when this same build (the same fingerprint) wrote it."""
        state = torch.load(checkpoint, weights_only=False)
        if state.get("fingerprint") == self.key:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.rng.bit_generator.state = state["rng"]
            torch.set_rng_state(state["torch_rng"])
            self.start, self.curves, self.totals, self.seconds = (state["step"], state["curves"], state["totals"],
                                                                  state["seconds"])

    def save(self, checkpoint: Path, step: int) -> None:
        save_checkpoint(checkpoint, {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(), "step": step, "curves": self.curves,
            "totals": self.totals, "seconds": self.seconds, "fingerprint": self.key})

    def train(self, samples: Samples, pixels: torch.Tensor, pad_id: int, checkpoint: Path, progress: bool) -> None:
        """Train from the current step to the last, keeping a checkpoint every ``checkpoint_every`` steps."""
        steps = len(self.schedule)
        self.model.train()
        self.model.model.vision_tower.eval()
        bar = tqdm(range(self.start, steps), desc=f"pretraining {self.config.size}", unit="step",
                   disable=not progress, initial=self.start, total=steps)
        for step in bar:
            loss = self.step(step, samples, pixels, pad_id)
            if step % 20 == 0:
                bar.set_postfix(phase=self.schedule[step], loss=f"{loss:.3f}")
            if (step + 1) % self.config.checkpoint_every == 0 and step + 1 < steps:
                self.save(checkpoint, step + 1)
        self.model.eval()

    def step(self, step: int, samples: Samples, pixels: torch.Tensor, pad_id: int) -> float:
        """One optimizer step on a batch of the step's phase; counts its tokens, images, FLOPs and time."""
        phase = self.schedule[step]
        tick = time.perf_counter()
        batch_samples = samples.batch(phase, self.rng)
        batch = collate(batch_samples, pixels, pad_id)
        image_tokens = self.model.config.image_seq_length
        n_images = sum(s[2] is not None for s in batch_samples)
        n_text = int(batch["attention_mask"].sum()) - n_images * image_tokens
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.config.precision == "bf16"):
            loss = self.model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.trained, 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(loss.item()):
            raise TextonlyError(f"pretraining diverged at step {step} ({phase}): loss {loss.item()}")
        self.seconds[phase] += time.perf_counter() - tick
        self.totals["text_tokens"] += n_text
        self.totals["image_tokens"] += n_images * image_tokens
        self.totals["images"] += n_images
        self.totals["flops"] += batch_flops(self.model.config, batch, lora_r=None)  # trained in full, tower frozen
        self.curves.append({"step": step, "phase": phase, "loss": round(loss.item(), 5),
                            "lr": self.scheduler.get_last_lr()[0]})
        return loss.item()

    def throughput(self, encoder_seconds: float, evaluation_seconds: float) -> dict:
        """Steps, tokens and FLOPs per second of training, with the totals and the time per phase."""
        seconds, steps = sum(self.seconds.values()), len(self.schedule)
        return {"seconds": round(seconds, 2), "steps": steps, "steps_per_s": steps / seconds,
                "tokens_per_s": (self.totals["text_tokens"] + self.totals["image_tokens"]) / seconds,
                "gflop_per_s": self.totals["flops"] / seconds / 1e9, **self.totals,
                "phase_seconds": {k: round(v, 2) for k, v in self.seconds.items()},
                "encoder_seconds": round(encoder_seconds, 2), "evaluation_seconds": round(evaluation_seconds, 2)}


def _write_model(out: Path, run: _Run, processor, material: Material, encoder: dict, encoder_seconds: float, *,
                 evaluate: bool, progress: bool) -> None:
    """The model's folder: weights and processor, curves, the probe report, then its config and card."""
    from textonly.organism.vlm import size_summary

    model, config = run.model, run.config
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "curves.jsonl").write_text(dumps_jsonl(run.curves), encoding="utf-8")
        eval_start = time.perf_counter()
        if evaluate:
            report = evaluate_base(model, processor, config, material.appearance_known, progress=progress)
            (tmp / "report.json").write_text(dumps_json(report), encoding="utf-8")
        throughput = run.throughput(encoder_seconds, time.perf_counter() - eval_start)
        # the config (and the card read from it) last: with the right fingerprint it marks a finished build
        (tmp / "pretrain_config.json").write_text(dumps_json({
            "fingerprint": run.key, "config": asdict(config), "encoder": encoder,
            "steps": dict(zip(PHASES, config.resolved_steps())),
            "parameters": size_summary(model), "image_tokens": model.config.image_seq_length,
            "throughput": throughput,
            "material": {"statements": len(material.statements), "captions": len(material.captions),
                         "questions": len(material.questions), "images": len(material.image_files)},
            "targets_with_appearance_in_text": material.appearance_known,
            "resumed_at_step": run.start or None,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        }), encoding="utf-8")
        write_model_card(tmp)
