"""Pretraining's material and samples: both worlds' ``pretrain/`` folders read into world text,
captions and questions, then tokenized once into the samples of each phase (packed
sentences, captions, multi-turn question conversations) and drawn at random into batches.

What the base model knows of the study's *targets* (held out of every image): the facts
of every target (as an LLM knows encyclopedic facts), and the appearance of a fraction
``target_appearance_fraction`` of them in text; which ones is recorded in the config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from textonly.core.errors import TextonlyError
from textonly.core.fileio import read_jsonl
from textonly.core.prompts import assistant, mcq_messages, user_content
from textonly.data.layout import safe_image_file

if TYPE_CHECKING:
    from textonly.organism.pretrain import PretrainConfig

WORLD_NAMES = ("wings", "heritage")
#: The prompt of the alignment samples: the embedded model captions an image when asked exactly this.
CAPTION_PROMPT = "Describe the image."


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
            images[key] = safe_image_file(root, c["image_path"], f"{root}/captions.jsonl")
            captions.append((key, c["caption"]))
        for r in read_jsonl(root / "annotations.jsonl"):
            key = f"{name}/{r['image_path']}" if r["image_path"] else None
            if key:
                images[key] = safe_image_file(root, r["image_path"], f"{root}/annotations.jsonl")
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
