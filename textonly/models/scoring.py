"""The three scorings of multiple-choice questions, each a list of predictions.

* ``option`` (the cloze formulation of OLMES, arXiv 2406.08446, and of VLMClassifier,
  arXiv 2405.18415): each option's text is scored as the assistant's answer after the
  prompt, by its mean log-likelihood per token; the sum and the mean per character are
  recorded too. The prompt runs once per question and its key/value cache is shared by
  the options.
* ``letter``: one forward pass per question (batched): the next-token logits after the
  prompt, restricted to the option letters. A letter can be tokenized as ``A`` or `` A``
  (and a tokenizer may have either); both variants are pooled with log-sum-exp.
* ``generate``: greedy generation of a few tokens, strictly parsed (K-VISCUIT's reference).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from tqdm.auto import tqdm

from textonly.core.errors import TextonlyError
from textonly.core.prompts import DEFAULT_DESCRIPTION, LETTERS, answer_text, assistant, mcq_messages


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
    from textonly.data.images import load_image
    from textonly.data.layout import IMAGES

    return load_image(root / IMAGES, record["image_path"])


def token_counts(processor, batch: dict) -> tuple[int, int]:
    """(text tokens, image tokens) of a processed batch, padding excluded, for any VLM processor."""
    real = batch["attention_mask"].bool()
    image_id = getattr(processor, "image_token_id", None) or processor.tokenizer.convert_tokens_to_ids(
        processor.image_token)
    image = int(((batch["input_ids"] == image_id) & real).sum())
    return int(real.sum()) - image, image


def _count_tokens(processor, inputs: dict, counts: dict | None) -> None:
    """Add a batch's text and image tokens to ``counts``."""
    if counts is not None:
        text, image = token_counts(processor, inputs)
        counts["text"] = counts.get("text", 0) + text
        counts["image"] = counts.get("image", 0) + image


def _inputs(processor, batch: list[dict], root: Path, condition: str, description: str, padding_side: str,
            device, texts: list[str] | None = None) -> dict:
    """The batch's prompts (or the given ``texts``, one per record) through the processor, images only where shown."""
    if texts is None:
        texts = [processor.apply_chat_template(mcq_messages(r, condition, description), add_generation_prompt=True)
                 for r in batch]
    images = [_load_image(root, r) for r in batch if condition == "image" and r.get("image_path") is not None]
    inputs = processor(text=texts, images=images or None, return_tensors="pt", padding=True,
                       padding_side=padding_side)
    return {k: v.to(device) for k, v in inputs.items()}


def option_tokens(processor, record: dict, condition: str = "image",
                  description: str = DEFAULT_DESCRIPTION) -> tuple[str, list[list[int]]]:
    """The context shared by the options, and each option's token ids as they fall in the full text.

    The conversation is rendered with each option as the assistant's answer and tokenized
    whole; the option's tokens are those that overlap its characters. A template that puts
    a space before the answer (LLaVA-NeXT's ``[/INST] answer``) would otherwise be scored
    wrongly: ``" red"`` is one token in the full text, not ``" "`` then ``"red"``. The
    context is the text before the first option token; it must be the same for every
    option and tokenize alone as it does in the full text.
    """
    tokenizer = processor.tokenizer
    messages = mcq_messages(record, condition, description)
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    context, ids = None, []
    for k, option in enumerate(record["options"]):
        text = processor.apply_chat_template(messages + [assistant(answer_text(record, "option", k))])
        # the answer begins where the conversation leaves the generation prompt; what lies
        # between there and the option (a space the template adds) is part of the answer
        begin = len(os.path.commonprefix([prompt, text]))
        start = text.find(option, begin) if begin >= len(prompt) - 1 else -1
        if start < 0 or not option:
            raise TextonlyError(f"question {record['id_']!r}: option {option!r} is not where the chat template "
                                "puts the answer")
        end = start + len(option)
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        spans = encoded["offset_mapping"]
        inside = [t for t, (a, b) in enumerate(spans) if b > a and a < end and b > begin]
        here = text[: spans[inside[0]][0]]
        if context is None:
            context = here
            if tokenizer(here, add_special_tokens=False)["input_ids"] != encoded["input_ids"][: inside[0]]:
                raise TextonlyError(f"question {record['id_']!r}: the prompt tokenizes differently alone than "
                                    "before its answer; option scoring cannot share it")
        elif here != context:
            raise TextonlyError(f"question {record['id_']!r}: the options do not share one context")
        ids.append([encoded["input_ids"][t] for t in inside])
    return context, ids


def _repeat_cache(cache, index: torch.Tensor) -> None:
    """Each prompt's key/value cache once per option (rows picked by ``index``), in place."""
    if hasattr(cache, "batch_select_indices"):
        cache.batch_select_indices(index)
    else:  # a legacy tuple cache
        raise TextonlyError("option scoring needs a transformers Cache object (transformers >= 4.36)")


@torch.no_grad()
def score_options(model, processor, records: list[dict], root: str | Path, *, condition: str = "image",
                  description: str = DEFAULT_DESCRIPTION, batch_size: int = 32, progress: bool = True,
                  counts: dict | None = None) -> list[dict]:
    """Option scores of each question: ``{"id_", "scores", "sum", "per_char", "prediction", "correct"}``.

    ``scores`` is each option's mean log-likelihood per token (the prediction is its
    argmax), ``sum`` the total, ``per_char`` the total per character of the option. The
    prompts of a batch run once (left-padded, cached); then every option of every question
    runs as one row over its question's cache, so an option costs only its own tokens.
    ``counts``, if given, accumulates the ``text`` and ``image`` tokens processed (the
    prompts and the options' tokens).
    """
    root = Path(root)
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in tqdm(range(0, len(records), batch_size), desc="scoring options", unit="batch",
                      disable=not progress):
        batch = records[start:start + batch_size]
        contexts, options = zip(*(option_tokens(processor, r, condition, description) for r in batch))
        inputs = _inputs(processor, batch, root, condition, description, "left", device, texts=list(contexts))
        _count_tokens(processor, inputs, counts)
        token_lp = _option_logprobs(model, processor.tokenizer.pad_token_id, inputs, options, counts)
        for r, opts in zip(batch, options):
            out.append(_option_prediction(r, token_lp[: len(opts)]))
            token_lp = token_lp[len(opts):]
    return out


def _option_logprobs(model, pad: int, inputs: dict, options, counts: dict | None) -> list[list[float]]:
    """Each option's token log-probabilities, the options of every question of the batch in order.

    The prompts run once; each option's first token is read from the prompt's last position
    (left padding: the last column is real), its later tokens from one row per option run over
    its question's repeated cache.
    """
    device = inputs["input_ids"].device
    prefill = model(**inputs, use_cache=True)
    first = torch.log_softmax(prefill.logits[:, -1].float(), dim=-1)
    rows = [(q, ids) for q, opts in enumerate(options) for ids in opts]
    index = torch.tensor([q for q, _ in rows], device=device)
    width = max(len(ids) for _, ids in rows)
    cont = torch.full((len(rows), width), pad, dtype=torch.long, device=device)
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    for i, (_, ids) in enumerate(rows):
        cont[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = 1
    if counts is not None:
        counts["text"] = counts.get("text", 0) + int(mask.sum())
    token_lp = [[first[q, ids[0]].item()] for q, ids in rows]
    if width > 1:
        cache = prefill.past_key_values
        _repeat_cache(cache, index)
        attention = torch.cat([inputs["attention_mask"][index], mask], dim=1)
        later = model(input_ids=cont[:, :-1], attention_mask=attention[:, :-1], cache=cache, use_cache=True,
                      **_continuation_positions(model, inputs, index, width)).logits.float()
        later = torch.log_softmax(later, dim=-1)
        for i, (_, ids) in enumerate(rows):
            token_lp[i] += [later[i, t - 1, ids[t]].item() for t in range(1, len(ids))]
    return token_lp


def _continuation_positions(model, inputs: dict, index: torch.Tensor, width: int) -> dict:
    """``{"position_ids": ...}`` for the options' later tokens under M-RoPE (Qwen2-VL); ``{}`` otherwise.

    The text after the prompt continues at the prompt's offset per row (zero without an
    image), as generation places it; given explicitly, since the model would pair its stored
    offsets with the prompt rows, not the repeated ones.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # under LoRA
    inner = getattr(base, "model", None)
    if not hasattr(inner, "rope_deltas"):
        return {}
    length = inputs["input_ids"].shape[1]
    steps = torch.arange(length, length + width - 1, device=index.device)[None, :].repeat(len(index), 1)
    if "pixel_values" in inputs:
        steps = steps + inner.rope_deltas[index].view(-1, 1)
    return {"position_ids": steps.unsqueeze(0).expand(3, -1, -1)}


def _option_prediction(record: dict, token_lp: list[list[float]]) -> dict:
    """A question's option scores (mean per token, sum, per character) and the prediction the mean makes."""
    total = [sum(lp) for lp in token_lp]
    mean = [t / len(lp) for t, lp in zip(total, token_lp)]
    per_char = [t / max(len(o), 1) for t, o in zip(total, record["options"])]
    prediction = max(range(len(mean)), key=mean.__getitem__)
    return {"id_": record["id_"], "scores": mean, "sum": total, "per_char": per_char,
            "prediction": prediction, "correct": prediction == record["answer"]}


@torch.no_grad()
def score_letters(model, processor, records: list[dict], root: str | Path, *, condition: str = "image",
                  description: str = DEFAULT_DESCRIPTION, batch_size: int = 32, progress: bool = True,
                  counts: dict | None = None) -> list[dict]:
    """Letter scores of each question: ``{"id_", "scores", "prediction", "correct"}``.

    ``counts``, if given, accumulates the ``text`` and ``image`` tokens processed."""
    root = Path(root)
    letters = letter_token_ids(processor.tokenizer, max(len(r["options"]) for r in records))
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in tqdm(range(0, len(records), batch_size), desc="scoring", unit="batch", disable=not progress):
        batch = records[start:start + batch_size]
        inputs = _inputs(processor, batch, root, condition, description, "right", device)
        _count_tokens(processor, inputs, counts)
        logits = model(**inputs).logits
        last = inputs["attention_mask"].sum(dim=1) - 1  # right padding: the prompt's last position
        logprobs = torch.log_softmax(logits[torch.arange(len(batch)), last].float(), dim=-1)
        for r, lp in zip(batch, logprobs):
            scores = [float(torch.logsumexp(lp[ids], dim=0)) for ids in letters[: len(r["options"])]]
            prediction = max(range(len(scores)), key=scores.__getitem__)
            out.append({"id_": r["id_"], "scores": scores, "prediction": prediction,
                        "correct": prediction == r["answer"]})
    return out


# "Answer:" (optional), then the letter alone or marked: "(B)", "B.", "B)", "B:"
_LETTER = re.compile(r"\s*(?:(?i:answer)\s*:\s*)?(?:\((?P<enclosed>[A-H])\)|(?P<bare>[A-H])(?P<mark>[.):])?)(?P<rest>.*)",
                     re.DOTALL)


def parse_letter(text: str, n_options: int) -> int | None:
    """The option a generated answer names, strictly; anything else is a parse failure (``None``).

    Accepted: the letter alone or with its punctuation (``B``, ``(B)``, ``B.``, ``B)``), after
    ``Answer:`` or not; a marked letter may be followed by a space and more (``B) red``). Prose
    that merely starts with a capital letter (``A butterfly``) names no option.
    """
    match = _LETTER.match(text)
    if not match:
        return None
    letter = match["enclosed"] or match["bare"]
    rest = match["rest"]
    marked = bool(match["enclosed"] or match["mark"])
    if rest.strip() and not (marked and rest[0].isspace()):
        return None
    index = LETTERS.index(letter)
    return index if index < n_options else None


@torch.no_grad()
def generate_answers(model, processor, records: list[dict], root: str | Path, *, condition: str = "image",
                     description: str = DEFAULT_DESCRIPTION, batch_size: int = 16, max_new_tokens: int = 3,
                     progress: bool = True, counts: dict | None = None) -> list[dict]:
    """K-VISCUIT's reference scoring: greedy generation of a few tokens, strictly parsed.

    A parse failure counts as wrong (``prediction`` is ``None``); never a random guess.
    """
    root = Path(root)
    model.eval()
    device = next(model.parameters()).device
    tokenizer = processor.tokenizer
    out = []
    for start in tqdm(range(0, len(records), batch_size), desc="generating", unit="batch", disable=not progress):
        batch = records[start:start + batch_size]
        inputs = _inputs(processor, batch, root, condition, description, "left", device)
        _count_tokens(processor, inputs, counts)  # the prompts; generated tokens are few
        generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                   pad_token_id=tokenizer.pad_token_id)
        texts = tokenizer.batch_decode(generated[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        for r, text in zip(batch, texts):
            prediction = parse_letter(text, len(r["options"]))
            out.append({"id_": r["id_"], "output": text, "prediction": prediction,
                        "correct": prediction == r["answer"]})
    return out
