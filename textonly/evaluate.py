"""Evaluation: letter scoring of multiple-choice questions, and accuracy with intervals.

``letter`` scoring is one forward pass per question (batched): the next-token logits
after the prompt, restricted to the option letters. A letter can be tokenized as ``A`` or
`` A`` (and a tokenizer may have either); both variants are pooled with log-sum-exp.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from textonly.prompts import LETTERS, mcq_messages
from textonly.stats import clustered_bootstrap_ci


def letter_token_ids(tokenizer, n: int = 4) -> list[list[int]]:
    """For each option letter, the ids of its single-token spellings (``A``, `` A``)."""
    ids = []
    for letter in LETTERS[:n]:
        variants = set()
        for text in (letter, " " + letter):
            tokens = tokenizer.encode(text, add_special_tokens=False)
            if len(tokens) == 1:
                variants.add(tokens[0])
        if not variants:
            raise ValueError(f"the tokenizer has no single token for the letter {letter!r}")
        ids.append(sorted(variants))
    return ids


def _load_image(root: Path, record: dict):
    from PIL import Image

    with Image.open(root / "images" / record["image_path"]) as image:
        return image.convert("RGB")


@torch.no_grad()
def score_letters(model, processor, records: list[dict], root: str | Path, *, condition: str = "image",
                  describer: str = "full", batch_size: int = 32, progress: bool = True) -> list[dict]:
    """Letter scores of each question: ``{"id_", "scores", "prediction", "correct"}``."""
    root = Path(root)
    tokenizer = processor.tokenizer
    letters = letter_token_ids(tokenizer, max(len(r["options"]) for r in records))
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in tqdm(range(0, len(records), batch_size), desc="scoring", unit="batch", disable=not progress):
        batch = records[start:start + batch_size]
        texts, images = [], []
        for r in batch:
            messages = mcq_messages(r, condition, describer)
            texts.append(processor.apply_chat_template(messages, add_generation_prompt=True))
            if condition == "image" and r.get("image_path") is not None:
                images.append(_load_image(root, r))
        inputs = processor(text=texts, images=images or None, return_tensors="pt", padding=True)
        inputs = {k: v.to(device) for k, v in inputs.items()}
        logits = model(**inputs).logits
        last = inputs["attention_mask"].sum(dim=1) - 1  # right padding: the prompt's last position
        logprobs = torch.log_softmax(logits[torch.arange(len(batch)), last].float(), dim=-1)
        for r, lp in zip(batch, logprobs):
            scores = [float(torch.logsumexp(lp[ids], dim=0)) for ids in letters[: len(r["options"])]]
            prediction = max(range(len(scores)), key=scores.__getitem__)
            out.append({"id_": r["id_"], "scores": scores, "prediction": prediction,
                        "correct": prediction == r["answer"]})
    return out


def accuracy_table(records: list[dict], predictions: list[dict], by: str = "question_type") -> dict:
    """Accuracy overall and per value of ``by``, each with a 95% interval clustered by image."""
    correct = {p["id_"]: p["correct"] for p in predictions}
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups["overall"].append(r)
        groups[str(r[by])].append(r)
    table = {}
    for key, rs in groups.items():
        acc, low, high = clustered_bootstrap_ci([correct[r["id_"]] for r in rs],
                                                [r["image_path"] or r["id_"] for r in rs])
        table[key] = {"accuracy": acc, "low": low, "high": high, "n": len(rs)}
    return table
