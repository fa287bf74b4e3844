"""Pretrain the embedded base VLM on both worlds' pretraining material, offline, in stages.

The recipe follows how LLaVA-style VLMs are made:

0. *vision encoder*: a CLIP model pretrained on its own (:mod:`textonly.encoder`), built
   once per world seed and size; its vision tower joins the VLM frozen;
1. *language*: packed sentences of world text (facts, appearances, look-alikes);
2. *alignment*: image -> caption of generic individuals and pretraining kinds (the
   projector learns to hand the tower's patches to the language model);
3. *instruction*: multiple-choice questions in the study's prompt format, answered in the
   ``option`` format (the option's text; see :mod:`textonly.evaluate`): attribute and
   which-kind questions with images, knowledge questions in text, the same conversations
   with the caption in place of the image, and replay of the first two stages.

``image_start_fraction`` F is the fraction of the language batches done before images
appear (arXiv 2503.07603): the first F of them run alone, then the remaining language
batches and all alignment batches are interleaved at random; instruction comes last.
F = 1 is the LLaVA recipe (images after full language pretraining). The total number of
steps does not depend on F. The projector and the language model train in every image
stage (LLaVA's first stage trains the projector alone; here the language model is small
and its pretraining short, so it learns the captions' words with the projector).

What the base model knows of the study's *targets* (held out of every image): the facts
of every target (as an LLM knows encyclopedic facts), and the appearance of a fraction
``target_appearance_fraction`` of them in text; which ones is recorded in the config.

Pretraining keeps a checkpoint beside its output every ``checkpoint_every`` steps; the same
command after a kill resumes there and ends with the weights an uninterrupted run has.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from textonly.cards import write_model_card
from textonly.errors import TextonlyError
from textonly.fileio import (atomic_directory, build_key, dumps_json, dumps_jsonl, finished_build, read_jsonl,
                             save_checkpoint)
from textonly.prompts import assistant, mcq_messages, user_content
from textonly.tokenizer import VOCAB_SIZE, world_tokenizer

WORLD_NAMES = ("wings", "heritage")
CAPTION_PROMPT = "Describe the image."
PHASES = ("language", "alignment", "instruction")

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
    #: Settings of the vision encoder (:class:`textonly.encoder.EncoderConfig` fields; its
    #: size is this model's). The defaults make the one shared encoder of the size.
    encoder: dict = field(default_factory=dict)
    checkpoint_every: int = 100

    def resolved_steps(self) -> tuple[int, int, int]:
        return tuple(self.steps) if self.steps else DEFAULT_STEPS[self.size]

    def encoder_config(self):
        """The :class:`~textonly.encoder.EncoderConfig` this model's vision tower comes from."""
        from textonly.encoder import EncoderConfig

        return EncoderConfig(**{**self.encoder, "size": self.size, "worlds": self.worlds})

    def validate(self) -> None:
        from textonly.vlm import MODEL_SIZES

        if self.size not in MODEL_SIZES:
            raise TextonlyError(f"--size {self.size}: choose from {', '.join(MODEL_SIZES)}")
        if not 0.0 <= self.image_start_fraction <= 1.0:
            raise TextonlyError(f"--image-start-fraction {self.image_start_fraction}: must be between 0 and 1")
        if self.precision not in ("bf16", "fp32"):
            raise TextonlyError(f"--precision {self.precision}: choose bf16 or fp32")
        self.encoder_config().validate()


def encoder_path(config: PretrainConfig, out: str | Path) -> Path:
    """The shared encoder beside the model folder ``out``: one per world seed and size (and settings)."""
    from textonly.encoder import encoder_folder

    folder = encoder_folder(Path(out).parent, config.size, config.worlds)
    if config.encoder:  # non-default settings (smoke runs) get a folder of their own
        folder = folder.with_name(folder.name + "-" + build_key(config.encoder)[:8])
    return folder


@dataclass
class Material:
    """The pretraining material of both worlds, as text and chat samples."""

    statements: list[str]
    captions: list[tuple[str, str]]  # (image key, caption)
    questions: list[tuple[str | None, dict]]  # (image key or None, record)
    image_files: dict[str, Path]
    appearance_known: list[str]  # targets whose appearance is in the text


def gather_material(config: PretrainConfig) -> Material:
    """Read both worlds' ``pretrain/`` folders; choose which targets' appearance the text shows."""
    rng = np.random.default_rng([config.seed, 7])
    statements, captions, questions, images, known = [], [], [], {}, []
    for name in WORLD_NAMES:
        root = Path(config.worlds) / name / "pretrain"
        world = json.loads((root.parent / "world.json").read_text())
        targets = sorted(s["name"] for s in world["species"] if s["role"] == "target")
        k = round(config.target_appearance_fraction * len(targets))
        chosen = {targets[i] for i in rng.choice(len(targets), size=k, replace=False)} if k else set()
        known += sorted(chosen)
        for line in read_jsonl(root / "text.jsonl"):
            if line["role"] != "target" or line["kind"] == "fact" or line["subject"] in chosen:
                statements.append(line["text"])
        for c in read_jsonl(root / "captions.jsonl"):
            key = f"{name}/{c['image_path']}"
            images[key] = root / "images" / c["image_path"]
            captions.append((key, c["caption"]))
        for r in read_jsonl(root / "annotations.jsonl"):
            key = f"{name}/{r['image_path']}" if r["image_path"] else None
            if key:
                images[key] = root / "images" / r["image_path"]
            questions.append((key, r))
    return Material(statements, captions, questions, images, known)


class SampleMaker:
    """Token ids and loss labels of text and chat samples (image tokens expanded as the processor does)."""

    def __init__(self, processor, image_seq_length: int):
        self.tok = processor.tokenizer
        self.n_image = image_seq_length
        self.image_id = self.tok.image_token_id

    def _expand(self, ids: list[int], labels: list[int]) -> tuple[list[int], list[int]]:
        out_ids, out_labels = [], []
        for i, label in zip(ids, labels):
            if i == self.image_id:
                out_ids += [i] * self.n_image
                out_labels += [-100] * self.n_image
            else:
                out_ids.append(i)
                out_labels.append(label)
        return out_ids, out_labels

    def chat(self, messages: list[dict]) -> tuple[list[int], list[int]]:
        """Loss on the assistant's turns only (every one of them, in a multi-turn conversation).

        The conversation is tokenized once; assistant spans are found by the character
        lengths of the rendered prefixes (rendering is cheap, tokenizing is not).
        """
        render = self.tok.apply_chat_template
        full = render(messages, tokenize=False)
        spans = []
        for j, message in enumerate(messages):
            if message["role"] == "assistant":
                before = render(messages[:j], add_generation_prompt=True, tokenize=False)
                upto = render(messages[: j + 1], tokenize=False)
                if not (full.startswith(before) and full.startswith(upto)):
                    raise TextonlyError("the chat template's prompt is not a prefix of the full conversation")
                spans.append((len(before), len(upto)))
        encoded = self.tok(full, add_special_tokens=False, return_offsets_mapping=True)
        ids = encoded["input_ids"]
        labels = [-100] * len(ids)
        for t, (a, b) in enumerate(encoded["offset_mapping"]):
            if b > a and any(lo <= a and b <= hi for lo, hi in spans):
                labels[t] = ids[t]
        return self._expand(ids, labels)

    def text(self, statement_ids: list[list[int]]) -> tuple[list[int], list[int]]:
        """Packed sentences, loss on every token."""
        ids = [self.tok.bos_token_id]
        for s in statement_ids:
            ids += s
        ids.append(self.tok.eos_token_id)
        return ids, list(ids)


def conversation(records: list[dict], condition: str, description: str | None = None) -> list[dict]:
    """A multi-turn chat: the image (or description) with the first question, one answer per turn,
    each answer the option's text."""
    messages = []
    for i, r in enumerate(records):
        if i == 0:
            record = {**r, "descriptions": {"given": description}} if description is not None else r
            turn = mcq_messages(record, condition, "given", answer=True, answer_format="option")
        else:
            turn = mcq_messages(r, "no_image", answer=True, answer_format="option")
        messages += turn
    return messages


def caption_messages(caption: str) -> list[dict]:
    """The alignment sample: the image, the caption prompt, the caption as the answer."""
    return [{"role": "user", "content": user_content(CAPTION_PROMPT, image=True)}, assistant(caption)]


def _pixel_values(processor, files: dict[str, Path], keys: list[str], progress: bool) -> torch.Tensor:
    from PIL import Image

    out = []
    for start in tqdm(range(0, len(keys), 256), desc="preparing images", disable=not progress, unit="batch"):
        batch = []
        for key in keys[start:start + 256]:
            with Image.open(files[key]) as im:
                batch.append(im.convert("RGB"))
        out.append(processor.image_processor(batch, return_tensors="pt")["pixel_values"])
    return torch.cat(out)


def collate(samples: list[tuple[list[int], list[int], int | None]], pixels: torch.Tensor, pad_id: int) -> dict:
    """Right-padded batch; ``pixel_values`` for the samples that have an image, in order."""
    width = max(len(ids) for ids, _, _ in samples)
    input_ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    images = []
    for row, (ids, labs, image) in enumerate(samples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        mask[row, : len(ids)] = 1
        if image is not None:
            images.append(image)
    batch = {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
    if images:
        batch["pixel_values"] = pixels[torch.tensor(images)]
    return batch


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
    here = Path(__file__).parent
    code = [(here / module).read_bytes() for module in ("pretrain.py", "vlm.py", "prompts.py", "evaluate.py")]
    # the worlds count by their content (their fingerprints), not by how their path is spelled
    settings = {k: v for k, v in asdict(config).items() if k not in ("worlds", "checkpoint_every")}
    return build_key(settings, encoder_key, tokenizer.backend_tokenizer.to_str(), *worlds, *code)


def flops_per_sample(summary: dict, n_text_tokens: int, n_images: int, image_tokens: int) -> float:
    """Training FLOPs of one sample: 6 x parameters x tokens for the trained language model and
    projector, 2 x parameters x tokens for the frozen tower (forward only)."""
    lm_tokens = n_text_tokens + n_images * image_tokens
    return (6.0 * summary["language_model"] * lm_tokens
            + 6.0 * summary["multi_modal_projector"] * n_images * image_tokens
            + 2.0 * summary["vision_tower"] * n_images * (image_tokens + 1))


class Samples:
    """Every kind of pretraining sample, tokenized once, drawn at random by phase."""

    def __init__(self, config: PretrainConfig, material: Material, processor, image_tokens: int, index: dict):
        self.config = config
        maker = SampleMaker(processor, image_tokens)
        self.maker = maker
        self.statement_ids = processor.tokenizer(material.statements, add_special_tokens=False)["input_ids"]
        self.captions = [(*maker.chat(caption_messages(c)), index[k]) for k, c in material.captions]
        # instruction samples are conversations, as in LLaVA's instruction data: all questions
        # about one image (or one kind, in text) in turns, the image encoded once, every answer
        # in the loss
        by_image: dict[str, list[dict]] = {}
        by_subject: dict[str, list[dict]] = {}
        for k, r in material.questions:
            (by_image.setdefault(k, []) if k else by_subject.setdefault(r["subject"], [])).append(r)
        caption_of = dict(material.captions)
        turns = config.turns_per_conversation
        # each image's questions in a random order before they are cut into conversations:
        # in the world's fixed order an attribute always came at the same turn, and the model
        # answered the first turn's colour question with the spot colour (measured: wing colour
        # 0.23, spot colour 0.91; the probe asks every question as the first turn)
        rng = np.random.default_rng([config.seed, 5])
        for rs in by_image.values():
            rs[:] = [rs[i] for i in rng.permutation(len(rs))]
        chunks = [(k, rs[i:i + turns]) for k, rs in by_image.items() for i in range(0, len(rs), turns)]
        self.visual = [(*maker.chat(conversation(rs, "image")), index[k]) for k, rs in chunks]
        self.knowledge = [(*maker.chat(conversation(rs, "no_image")), None) for rs in by_subject.values()]
        # the same conversations with the image's caption in its place: reading a description
        # and answering is the skill that text-only training relies on
        self.described = [(*maker.chat(conversation(rs, "description", caption_of[k])), None)
                          for k, rs in chunks if k in caption_of]

    def text_sample(self, rng: np.random.Generator):
        picks = rng.choice(len(self.statement_ids), size=self.config.statements_per_sample, replace=False)
        return (*self.maker.text([self.statement_ids[i] for i in picks]), None)

    def batch(self, phase: str, rng: np.random.Generator) -> list:
        def draw(pool):
            return pool[int(rng.integers(len(pool)))]

        c, b = self.config, self.config.batch_size
        if phase == "language":
            return [self.text_sample(rng) for _ in range(b)]
        if phase == "alignment":
            return [draw(self.captions) for _ in range(b)]
        n_replay = int(round(c.replay_fraction * b))
        n_know = int(round(c.knowledge_fraction * b))
        n_described = int(round(c.described_fraction * b))
        n_visual = b - n_replay - n_know - n_described
        return ([draw(self.visual) for _ in range(n_visual)] + [draw(self.knowledge) for _ in range(n_know)]
                + [draw(self.described) for _ in range(n_described)]
                + [draw(self.captions) if i % 2 else self.text_sample(rng) for i in range(n_replay)])


def _checkpoint_file(out: Path) -> Path:
    return out.parent / f"{out.name}.checkpoint.pt"


def pretrain(config: PretrainConfig, out: str | Path, *, force: bool = False, progress: bool = True,
             evaluate: bool = True) -> Path:
    """Pretrain (or find already pretrained, or resume) a base VLM into ``out``; returns ``out``.

    The vision encoder it needs is built first when it is not on disk (beside ``out``).
    """
    from transformers import CLIPModel, get_wsd_schedule

    from textonly import vlm
    from textonly.encoder import pretrain_encoder

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
    clip = CLIPModel.from_pretrained(encoder_dir)
    vision = clip.config.vision_config
    processor = vlm.make_processor(tokenizer, vision.image_size, vision.patch_size)
    model = vlm.make_model(config.size, tokenizer, vision=clip, seed=config.seed)
    del clip
    model.model.vision_tower.requires_grad_(False)  # frozen, as in LLaVA
    image_tokens = model.config.image_seq_length

    keys = sorted(material.image_files)
    index = {k: i for i, k in enumerate(keys)}
    pixels = _pixel_values(processor, material.image_files, keys, progress)
    samples = Samples(config, material, processor, image_tokens, index)

    schedule = plan_schedule(config)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=config.learning_rate, weight_decay=config.weight_decay,
                                  betas=(0.9, 0.95))
    # warmup-stable-decay: the rate stays high through instruction (a cosine has mostly
    # decayed by then) and anneals over the last decay_fraction of the steps
    warmup = max(1, int(config.warmup_fraction * len(schedule)))
    decay = max(1, int(config.decay_fraction * len(schedule)))
    scheduler = get_wsd_schedule(optimizer, num_warmup_steps=warmup, num_decay_steps=decay,
                                 num_training_steps=len(schedule))
    rng = np.random.default_rng([config.seed, 3])
    summary = vlm.size_summary(model)
    curves, totals = [], {"text_tokens": 0, "image_tokens": 0, "images": 0, "flops": 0.0}
    seconds = {phase: 0.0 for phase in PHASES}
    start = 0
    checkpoint = _checkpoint_file(out)
    if checkpoint.is_file() and not force:
        state = torch.load(checkpoint, weights_only=False)
        if state.get("fingerprint") == key:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            rng.bit_generator.state = state["rng"]
            torch.set_rng_state(state["torch_rng"])
            start, curves, totals, seconds = state["step"], state["curves"], state["totals"], state["seconds"]
    model.train()
    model.model.vision_tower.eval()
    bar = tqdm(range(start, len(schedule)), desc=f"pretraining {config.size}", unit="step", disable=not progress,
               initial=start, total=len(schedule))
    for step in bar:
        phase = schedule[step]
        tick = time.perf_counter()
        batch_samples = samples.batch(phase, rng)
        batch = collate(batch_samples, pixels, tokenizer.pad_token_id)
        n_images = sum(s[2] is not None for s in batch_samples)
        n_text = int(batch["attention_mask"].sum()) - n_images * image_tokens
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.precision == "bf16"):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(loss.item()):
            raise TextonlyError(f"pretraining diverged at step {step} ({phase}): loss {loss.item()}")
        seconds[phase] += time.perf_counter() - tick
        totals["text_tokens"] += n_text
        totals["image_tokens"] += n_images * image_tokens
        totals["images"] += n_images
        totals["flops"] += flops_per_sample(summary, n_text, n_images, image_tokens)
        curves.append({"step": step, "phase": phase, "loss": round(loss.item(), 5),
                       "lr": scheduler.get_last_lr()[0]})
        if step % 20 == 0:
            bar.set_postfix(phase=phase, loss=f"{loss.item():.3f}")
        if (step + 1) % config.checkpoint_every == 0 and step + 1 < len(schedule):
            save_checkpoint(checkpoint, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(), "step": step + 1, "curves": curves,
                "totals": totals, "seconds": seconds, "fingerprint": key})
    train_seconds = sum(seconds.values())
    model.eval()

    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "curves.jsonl").write_text(dumps_jsonl(curves), encoding="utf-8")
        eval_start = time.perf_counter()
        report = evaluate_base(model, processor, config, material.appearance_known, progress=progress) \
            if evaluate else None
        if report is not None:
            (tmp / "report.json").write_text(dumps_json(report), encoding="utf-8")
        throughput = {"seconds": round(train_seconds, 2), "steps": len(schedule),
                      "steps_per_s": len(schedule) / train_seconds,
                      "tokens_per_s": (totals["text_tokens"] + totals["image_tokens"]) / train_seconds,
                      "gflop_per_s": totals["flops"] / train_seconds / 1e9, **totals,
                      "phase_seconds": {k: round(v, 2) for k, v in seconds.items()},
                      "encoder_seconds": round(encoder_seconds, 2),
                      "evaluation_seconds": round(time.perf_counter() - eval_start, 2)}
        # the config (and the card read from it) last: with the right fingerprint it marks a finished build
        (tmp / "pretrain_config.json").write_text(dumps_json({
            "fingerprint": key, "config": asdict(config), "encoder": {
                "folder": encoder_dir.name, "fingerprint": encoder_info["fingerprint"],
                "seconds": encoder_info["seconds"]},
            "steps": dict(zip(PHASES, config.resolved_steps())),
            "parameters": summary, "image_tokens": image_tokens, "throughput": throughput,
            "material": {"statements": len(material.statements), "captions": len(material.captions),
                         "questions": len(material.questions), "images": len(keys)},
            "targets_with_appearance_in_text": material.appearance_known,
            "resumed_at_step": start or None,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        }), encoding="utf-8")
        write_model_card(tmp)
    checkpoint.unlink(missing_ok=True)
    return out


def evaluate_base(model, processor, config: PretrainConfig, appearance_known: list[str], *,
                  scorings: tuple[str, ...] = ("option", "letter"), progress: bool = True) -> dict:
    """What the base model knows, per world and scoring, with 95% intervals clustered by image.

    ``attributes``: accuracy per attribute on ``pretrain_eval`` (held-out generic
    individuals); ``knowledge``: text questions about pretraining kinds, per fact;
    ``original``: Type 1 / Type 2 on the targets' test images before any fine-tuning (the
    study's ``original`` row), and the same split by whether the target's appearance was in
    the pretraining text (``original_appearance_in_text`` / ``original_appearance_not_in_text``).
    Probes of a scoring other than ``option`` carry its name as a suffix (``attributes_letter``).
    """
    from textonly.data import load_dataset
    from textonly.evaluate import accuracy_table, score_letters, score_options

    scorers = {"option": score_options, "letter": score_letters}
    known = set(appearance_known)
    report = {}
    for name in WORLD_NAMES:
        root = Path(config.worlds) / name
        probe = load_dataset(root / "pretrain_eval", check_images=False).records
        test = load_dataset(root / "test", check_images=False).records
        report[name] = {}
        for scoring in scorings:
            suffix = "" if scoring == "option" else f"_{scoring}"
            preds = scorers[scoring](model, processor, probe, root / "pretrain_eval", progress=progress)
            test_preds = scorers[scoring](model, processor, test, root / "test", progress=progress)
            attributes = [r for r in probe if r["question_type"] == 0]
            knowledge = [r for r in probe if r["question_type"] == 2]
            report[name].update({
                f"attributes{suffix}": accuracy_table(attributes, preds, by="category"),
                f"knowledge{suffix}": accuracy_table(knowledge, preds, by="asks"),
                f"original{suffix}": accuracy_table(test, test_preds, by="question_type"),
            })
            if scoring == "option":
                for label, keep in (("in_text", True), ("not_in_text", False)):
                    part = [r for r in test if (r["subject"] in known) == keep]
                    report[name][f"original_appearance_{label}"] = accuracy_table(part, test_preds,
                                                                                  by="question_type")
    return report
