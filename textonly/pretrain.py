"""Pretrain the embedded base VLM on both worlds' pretraining material, offline.

The schedule mirrors how real VLMs are made, in three kinds of batches:

1. *language*: packed sentences of world text (facts, appearances, look-alikes);
2. *alignment*: image -> caption of generic individuals and pretraining kinds;
3. *instruction*: multiple-choice questions in the study's prompt format (attributes
   and pretraining kinds with images; knowledge questions in text), with some replay of
   the first two.

``image_start_fraction`` F is the fraction of the language batches done before images
appear (arXiv 2503.07603): the first F of them run alone, then the remaining language
batches and all alignment batches are interleaved at random; instruction comes last.
F = 1 is the LLaVA recipe (images after full language pretraining). The total number of
steps does not depend on F.

What the base model knows of the study's *targets* (held out of every image): the facts
of every target (as an LLM knows encyclopedic facts), and the appearance of a fraction
``target_appearance_fraction`` of them in text; which ones is recorded in the config.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from textonly.cards import write_model_card
from textonly.errors import TextonlyError
from textonly.fileio import atomic_directory, build_key, dumps_json, dumps_jsonl, finished_build, read_jsonl
from textonly.prompts import LETTERS, mcq_messages, mcq_text, user_content

WORLD_NAMES = ("wings", "heritage")
CAPTION_PROMPT = "Describe the image."

#: (language, alignment, instruction) steps per size at the default batch size.
DEFAULT_STEPS = {"tiny": (100, 100, 70), "small": (300, 300, 100), "base": (600, 600, 400)}
#: Answer-format drill steps per size (short text-only batches, interleaved with language).
#: Off by default: measured on `small`, 3,000 drill steps (batch 8) left the format at
#: chance (0.28), so they would only cost time within the 15-minute goal; see the book.
DEFAULT_BINDING_STEPS = {"tiny": 0, "small": 0, "base": 0}


@dataclass
class PretrainConfig:
    """Everything that determines a pretrained base model (its hash names the build)."""

    size: str = "small"
    seed: int = 0
    image_start_fraction: float = 1.0
    worlds: str = "data/worlds"
    vocab_size: int = 2048
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
    knowledge_fraction: float = 0.15
    described_fraction: float = 0.25
    binding_steps: int | None = None  # answer-format drills (see binding_drill); None: per size
    precision: str = "fp32"  # bf16 autocast measured no faster at these sizes on CPU

    def resolved_steps(self) -> tuple[int, int, int]:
        return tuple(self.steps) if self.steps else DEFAULT_STEPS[self.size]

    def resolved_binding_steps(self) -> int:
        return DEFAULT_BINDING_STEPS[self.size] if self.binding_steps is None else self.binding_steps

    def validate(self) -> None:
        from textonly.vlm import MODEL_SIZES

        if self.size not in MODEL_SIZES:
            raise TextonlyError(f"--size {self.size}: choose from {', '.join(MODEL_SIZES)}")
        if not 0.0 <= self.image_start_fraction <= 1.0:
            raise TextonlyError(f"--image-start-fraction {self.image_start_fraction}: must be between 0 and 1")
        if self.precision not in ("bf16", "fp32"):
            raise TextonlyError(f"--precision {self.precision}: choose bf16 or fp32")
        for name in WORLD_NAMES:
            if not (Path(self.worlds) / name / "world.json").is_file():
                raise TextonlyError(f"{Path(self.worlds) / name}: no world there; run "
                                    f"`python -m textonly worlds build --out {self.worlds}` first")


@dataclass
class Material:
    """The pretraining material of both worlds, as text and chat samples."""

    statements: list[str]
    captions: list[tuple[str, str]]  # (image key, caption)
    questions: list[tuple[str | None, dict]]  # (image key or None, record)
    image_files: dict[str, Path]
    appearance_known: list[str]  # targets whose appearance is in the text
    option_words: list[str]  # every option text of the pretraining questions


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
    words = sorted({o for _, r in questions for o in r["options"]})
    return Material(statements, captions, questions, images, known, words)


def corpus_for_tokenizer(config: PretrainConfig) -> list[str]:
    """All text the tokenizer should know: world text, captions, questions, options, descriptions."""
    texts = []
    for name in WORLD_NAMES:
        root = Path(config.worlds) / name
        for split in ("pretrain", "pretrain_eval", "train", "test"):
            for r in read_jsonl(root / split / "annotations.jsonl"):
                texts.append(mcq_text(r["question"], r["options"]))
                texts += list((r.get("descriptions") or {}).values())
        texts += [line["text"] for line in read_jsonl(root / "pretrain" / "text.jsonl")]
        texts += [c["caption"] for c in read_jsonl(root / "pretrain" / "captions.jsonl")]
    texts.append(f"USER: {CAPTION_PROMPT} ASSISTANT: Description of the image:")
    return texts


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
    """A multi-turn chat: the image (or description) with the first question, one answer per turn."""
    messages = []
    for i, r in enumerate(records):
        if i == 0:
            record = {**r, "descriptions": {"given": description}} if description is not None else r
            turn = mcq_messages(record, condition, "given", answer=True)
        else:
            turn = mcq_messages(r, "no_image", answer=True)
        messages += turn
    return messages


def binding_drill(words: list[str], rng: np.random.Generator, n_options: int = 4, n_turns: int = 3) -> list[dict]:
    """A chat that drills the multiple-choice answer format: options, then every one of them asked for.

    Answering "B" for the option that holds the answer is a skill of its own (symbol
    binding) that small models learn slowly and only from many examples; these drills
    give several answers per short conversation, in the study's chat format, with any
    words of the world as options.
    """
    options = [words[i] for i in rng.choice(len(words), size=n_options, replace=False)]
    listing = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
    messages = []
    # asked with replacement: asking each option once would let the last answers be
    # guessed by elimination, a shortcut that small models take instead of binding
    for turn, k in enumerate(rng.integers(n_options, size=n_turns)):
        ask = f"Which option is {options[k]}?"
        messages += [{"role": "user", "content": f"{listing}\n{ask}" if turn == 0 else ask},
                     {"role": "assistant", "content": LETTERS[k]}]
    return messages


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
    """The kind of each step: 'language', 'binding', 'alignment' or 'instruction'.

    Binding drills are text, like language batches, and are spread evenly through them;
    ``image_start_fraction`` counts both.
    """
    n_lang, n_align, n_instr = config.resolved_steps()
    n_bind = config.resolved_binding_steps()
    rng = np.random.default_rng([config.seed, 11])
    text = ["language"] * n_lang + ["binding"] * n_bind
    text = [text[i] for i in np.argsort(np.r_[np.arange(n_lang) / max(n_lang, 1), np.arange(n_bind) / max(n_bind, 1)],
                                        kind="stable")]
    first = int(round(config.image_start_fraction * len(text)))
    mixed = text[first:] + ["alignment"] * n_align
    mixed = [mixed[i] for i in rng.permutation(len(mixed))]
    return text[:first] + mixed + ["instruction"] * n_instr


def fingerprint(config: PretrainConfig) -> str:
    """Hash of the config, the worlds it reads and the code that trains: same hash, same model."""
    worlds = [json.loads((Path(config.worlds) / name / "world.json").read_text())["fingerprint"]
              for name in WORLD_NAMES]
    code = [(Path(__file__).parent / module).read_bytes() for module in ("pretrain.py", "vlm.py", "prompts.py")]
    # the worlds count by their content (their fingerprints), not by how their path is spelled
    settings = {k: v for k, v in asdict(config).items() if k != "worlds"}
    return build_key(settings, *worlds, *code)


def flops_per_sample(summary: dict, n_text_tokens: int, n_images: int, image_tokens: int) -> float:
    """Training FLOPs (forward + backward = 6 x parameters x tokens) of one sample."""
    vision = summary["vision_tower"] + summary["multi_modal_projector"]
    lm_tokens = n_text_tokens + n_images * image_tokens
    return 6.0 * (summary["language_model"] * lm_tokens + vision * n_images * (image_tokens + 1))


def pretrain(config: PretrainConfig, out: str | Path, *, force: bool = False, progress: bool = True,
             evaluate: bool = True) -> Path:
    """Pretrain (or find already pretrained) a base VLM into ``out``; returns ``out``."""
    from textonly import vlm

    config.validate()
    out = Path(out)
    key = fingerprint(config)
    if not force and finished_build(out / "pretrain_config.json", key) and (out / "model.safetensors").is_file():
        return out
    torch.manual_seed(config.seed)
    rng = np.random.default_rng([config.seed, 3])
    material = gather_material(config)
    tokenizer = vlm.train_tokenizer(corpus_for_tokenizer(config), config.vocab_size)
    processor = vlm.make_processor(tokenizer)
    model = vlm.make_model(config.size, tokenizer, seed=config.seed)
    image_tokens = model.config.image_seq_length
    maker = SampleMaker(processor, image_tokens)

    keys = sorted(material.image_files)
    index = {k: i for i, k in enumerate(keys)}
    pixels = _pixel_values(processor, material.image_files, keys, progress)
    statement_ids = tokenizer(material.statements, add_special_tokens=False)["input_ids"]
    captions = [(*maker.chat([{"role": "user", "content": user_content(CAPTION_PROMPT, image=True)},
                              {"role": "assistant", "content": [{"type": "text", "text": c}]}]), index[k])
                for k, c in material.captions]
    # instruction samples are conversations, as in LLaVA's instruction data: all questions
    # about one image (or one kind, in text) in turns, the image encoded once, every answer
    # in the loss. A lone question gives one answer token per hundred-odd tokens.
    by_image: dict[str, list[dict]] = {}
    by_subject: dict[str, list[dict]] = {}
    for k, r in material.questions:
        (by_image.setdefault(k, []) if k else by_subject.setdefault(r["subject"], [])).append(r)
    caption_of = dict(material.captions)
    visual = [(*maker.chat(conversation(rs, "image")), index[k]) for k, rs in by_image.items()]
    knowledge = [(*maker.chat(conversation(rs, "no_image")), None) for rs in by_subject.values()]
    # the same conversations with the image's caption in its place: reading a description
    # and answering (a language model's skill) teaches the answer format cheaply
    described = [(*maker.chat(conversation(rs, "description", caption_of[k])), None)
                 for k, rs in by_image.items() if k in caption_of]

    def text_sample():
        picks = rng.choice(len(statement_ids), size=config.statements_per_sample, replace=False)
        return (*maker.text([statement_ids[i] for i in picks]), None)

    def draw(pool):
        return pool[int(rng.integers(len(pool)))]

    def batch_of(kind: str) -> list:
        b = config.batch_size
        if kind == "language":
            return [text_sample() for _ in range(b)]
        if kind == "binding":
            return [(*maker.chat(binding_drill(material.option_words, rng)), None) for _ in range(b)]
        if kind == "alignment":
            return [draw(captions) for _ in range(b)]
        n_replay = int(round(config.replay_fraction * b))
        n_know = int(round(config.knowledge_fraction * b))
        n_described = int(round(config.described_fraction * b))
        n_visual = b - n_replay - n_know - n_described
        return ([draw(visual) for _ in range(n_visual)] + [draw(knowledge) for _ in range(n_know)]
                + [draw(described) for _ in range(n_described)]
                + [draw(captions) if i % 2 else text_sample() for i in range(n_replay)])

    schedule = plan_schedule(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay,
                                  betas=(0.9, 0.95))
    from transformers import get_wsd_schedule

    # warmup-stable-decay: the rate stays high through instruction (a cosine has mostly
    # decayed by then) and anneals over the last decay_fraction of the steps
    warmup = max(1, int(config.warmup_fraction * len(schedule)))
    decay = max(1, int(config.decay_fraction * len(schedule)))
    scheduler = get_wsd_schedule(optimizer, num_warmup_steps=warmup, num_decay_steps=decay,
                                 num_training_steps=len(schedule))
    summary = vlm.size_summary(model)
    curves, totals = [], {"text_tokens": 0, "image_tokens": 0, "images": 0, "flops": 0.0}
    model.train()
    start = time.perf_counter()
    bar = tqdm(schedule, desc=f"pretraining {config.size}", unit="step", disable=not progress)
    for step, kind in enumerate(bar):
        samples = batch_of(kind)
        batch = collate(samples, pixels, tokenizer.pad_token_id)
        n_images = sum(s[2] is not None for s in samples)
        n_text = int(batch["attention_mask"].sum()) - n_images * image_tokens
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.precision == "bf16"):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        totals["text_tokens"] += n_text
        totals["image_tokens"] += n_images * image_tokens
        totals["images"] += n_images
        totals["flops"] += flops_per_sample(summary, n_text, n_images, image_tokens)
        if not math.isfinite(loss.item()):
            raise TextonlyError(f"pretraining diverged at step {step} ({kind}): loss {loss.item()}")
        curves.append({"step": step, "phase": kind, "loss": round(loss.item(), 5),
                       "lr": scheduler.get_last_lr()[0]})
        if step % 20 == 0:
            bar.set_postfix(phase=kind, loss=f"{loss.item():.3f}")
    seconds = time.perf_counter() - start
    model.eval()

    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "curves.jsonl").write_text(dumps_jsonl(curves), encoding="utf-8")
        throughput = {"seconds": round(seconds, 2), "steps": len(schedule),
                      "steps_per_s": len(schedule) / seconds,
                      "tokens_per_s": (totals["text_tokens"] + totals["image_tokens"]) / seconds,
                      "gflop_per_s": totals["flops"] / seconds / 1e9, **totals}
        report = evaluate_base(model, processor, config, progress=progress) if evaluate else None
        if report is not None:
            (tmp / "report.json").write_text(dumps_json(report), encoding="utf-8")
        # the config (and the card read from it) last: with the right fingerprint it marks a finished build
        (tmp / "pretrain_config.json").write_text(dumps_json({
            "fingerprint": key, "config": asdict(config), "steps": {
                **dict(zip(("language", "alignment", "instruction"), config.resolved_steps())),
                "binding": config.resolved_binding_steps()},
            "parameters": summary, "image_tokens": image_tokens, "throughput": throughput,
            "material": {"statements": len(material.statements), "captions": len(material.captions),
                         "questions": len(material.questions), "images": len(keys)},
            "targets_with_appearance_in_text": material.appearance_known,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        }), encoding="utf-8")
        write_model_card(tmp)
    return out


def format_probe(words: list[str], seed: int = 0, n: int = 200) -> list[dict]:
    """The answer format alone: "Which option is X?" in the study's prompt, X among the options.

    A model that has learned to answer by letter gets these right from the text; one that
    has not sits at chance, whatever it knows.
    """
    rng = np.random.default_rng([seed, 99])
    drills = []
    for i in range(n):
        options = [words[j] for j in rng.choice(len(words), size=4, replace=False)]
        answer = int(rng.integers(4))
        drills.append({"question": f"Which option is {options[answer]}?", "options": options, "answer": answer,
                       "category": "format", "id_": f"format.{i}", "question_type": 0, "image_path": None})
    return drills


def evaluate_base(model, processor, config: PretrainConfig, *, progress: bool = True) -> dict:
    """What the base model knows: the answer format, attributes on held-out images, knowledge
    in text, and the targets.

    The answer format (:func:`format_probe`) is measured once. Per world: accuracy per attribute on ``pretrain_eval`` (held-out generic individuals),
    text knowledge questions about pretraining kinds, and Type 1 / Type 2 on the targets'
    test images before any fine-tuning (the study's ``original`` row), with 95% intervals
    clustered by image.
    """
    from textonly.data import load_dataset
    from textonly.evaluate import accuracy_table, score_letters

    report = {}
    drills = format_probe(gather_material(config).option_words, config.seed)
    report["format"] = {"format": accuracy_table(drills, score_letters(model, processor, drills, config.worlds,
                                                                       condition="no_image", progress=progress),
                                                 by="category")}
    for name in WORLD_NAMES:
        root = Path(config.worlds) / name
        probe = load_dataset(root / "pretrain_eval", check_images=False).records
        preds = score_letters(model, processor, probe, root / "pretrain_eval", progress=progress)
        attributes = [r for r in probe if r["question_type"] == 0]
        knowledge = [r for r in probe if r["question_type"] == 2]
        test = load_dataset(root / "test", check_images=False).records
        test_preds = score_letters(model, processor, test, root / "test", progress=progress)
        report[name] = {
            "attributes": accuracy_table(attributes, preds, by="category"),
            "knowledge": accuracy_table(knowledge, preds, by="asks"),
            "original": accuracy_table(test, test_preds, by="question_type"),
        }
    return report
