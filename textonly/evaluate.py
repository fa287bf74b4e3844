"""Evaluation: the three scorings of multiple-choice questions, and accuracy with intervals.

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

import json
import os
import re
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from textonly.errors import TextonlyError
from textonly.fileio import build_key, dumps_json, dumps_jsonl, finished_build, read_jsonl, write_text_atomic
from textonly.prompts import CONDITIONS, LETTERS, SCORINGS, answer_text, assistant, mcq_messages
from textonly.stats import clustered_bootstrap_ci, mcnemar


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


def _inputs(processor, batch: list[dict], root: Path, condition: str, describer: str, padding_side: str,
            device, texts: list[str] | None = None) -> dict:
    """The batch's prompts (or the given ``texts``, one per record) through the processor, images only where shown."""
    if texts is None:
        texts = [processor.apply_chat_template(mcq_messages(r, condition, describer), add_generation_prompt=True)
                 for r in batch]
    images = [_load_image(root, r) for r in batch if condition == "image" and r.get("image_path") is not None]
    inputs = processor(text=texts, images=images or None, return_tensors="pt", padding=True,
                       padding_side=padding_side)
    return {k: v.to(device) for k, v in inputs.items()}


def option_tokens(processor, record: dict, condition: str = "image", describer: str = "full") -> tuple[str, list[list[int]]]:
    """The context shared by the options, and each option's token ids as they fall in the full text.

    The conversation is rendered with each option as the assistant's answer and tokenized
    whole; the option's tokens are those that overlap its characters. A template that puts
    a space before the answer (LLaVA-NeXT's ``[/INST] answer``) would otherwise be scored
    wrongly: ``" red"`` is one token in the full text, not ``" "`` then ``"red"``. The
    context is the text before the first option token; it must be the same for every
    option and tokenize alone as it does in the full text.
    """
    tokenizer = processor.tokenizer
    messages = mcq_messages(record, condition, describer)
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
                  describer: str = "full", batch_size: int = 32, progress: bool = True,
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
    pad = processor.tokenizer.pad_token_id
    out = []
    for start in tqdm(range(0, len(records), batch_size), desc="scoring options", unit="batch",
                      disable=not progress):
        batch = records[start:start + batch_size]
        contexts, options = zip(*(option_tokens(processor, r, condition, describer) for r in batch))
        inputs = _inputs(processor, batch, root, condition, describer, "left", device, texts=list(contexts))
        _count_tokens(processor, inputs, counts)
        prefill = model(**inputs, use_cache=True)
        first = torch.log_softmax(prefill.logits[:, -1].float(), dim=-1)  # left padding: the last column is real
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
        logprobs = [first[q, ids[0]].item() for q, ids in rows]
        token_lp = [[lp] for lp in logprobs]
        if width > 1:
            cache = prefill.past_key_values
            _repeat_cache(cache, index)
            attention = torch.cat([inputs["attention_mask"][index], mask], dim=1)
            extra = {}
            base = model.get_base_model() if hasattr(model, "get_base_model") else model  # under LoRA
            inner = getattr(base, "model", None)
            if hasattr(inner, "rope_deltas"):
                # M-RoPE (Qwen2-VL): the text after the prompt continues at the prompt's offset per
                # row (zero without an image), as generation places it; given explicitly, since
                # the model would pair its stored offsets with the prompt rows, not the repeated ones
                length = inputs["input_ids"].shape[1]
                steps = torch.arange(length, length + width - 1, device=device)[None, :].repeat(len(rows), 1)
                if "pixel_values" in inputs:
                    steps = steps + inner.rope_deltas[index].view(-1, 1)
                extra["position_ids"] = steps.unsqueeze(0).expand(3, -1, -1)
            later = model(input_ids=cont[:, :-1], attention_mask=attention[:, :-1], cache=cache,
                          use_cache=True, **extra).logits.float()
            later = torch.log_softmax(later, dim=-1)
            for i, (_, ids) in enumerate(rows):
                token_lp[i] += [later[i, t - 1, ids[t]].item() for t in range(1, len(ids))]
        i = 0
        for r, opts in zip(batch, options):
            lps = token_lp[i: i + len(opts)]
            i += len(opts)
            total = [sum(lp) for lp in lps]
            mean = [t / len(lp) for t, lp in zip(total, lps)]
            per_char = [t / max(len(o), 1) for t, o in zip(total, r["options"])]
            prediction = max(range(len(mean)), key=mean.__getitem__)
            out.append({"id_": r["id_"], "scores": mean, "sum": total, "per_char": per_char,
                        "prediction": prediction, "correct": prediction == r["answer"]})
    return out


@torch.no_grad()
def score_letters(model, processor, records: list[dict], root: str | Path, *, condition: str = "image",
                  describer: str = "full", batch_size: int = 32, progress: bool = True,
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
        inputs = _inputs(processor, batch, root, condition, describer, "right", device)
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


_LETTER = re.compile(r"^\s*\(?([A-H])\)?(?:[.:)]|\s|$)")


def parse_letter(text: str, n_options: int) -> int | None:
    """The option a generated answer names, strictly: it must start with the letter
    (``B``, ``B.``, ``(B)``, ``B) red``); anything else is a parse failure (``None``)."""
    match = _LETTER.match(text)
    if not match or LETTERS.index(match.group(1)) >= n_options:
        return None
    return LETTERS.index(match.group(1))


@torch.no_grad()
def generate_answers(model, processor, records: list[dict], root: str | Path, *, condition: str = "image",
                     describer: str = "full", batch_size: int = 16, max_new_tokens: int = 3,
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
        inputs = _inputs(processor, batch, root, condition, describer, "left", device)
        _count_tokens(processor, inputs, counts)  # the prompts; generated tokens are few
        generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                   pad_token_id=tokenizer.pad_token_id)
        texts = tokenizer.batch_decode(generated[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        for r, text in zip(batch, texts):
            prediction = parse_letter(text, len(r["options"]))
            out.append({"id_": r["id_"], "output": text, "prediction": prediction,
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


def metrics(records: list[dict], predictions: list[dict]) -> dict:
    """Accuracy overall, per ``question_type`` and per ``category``, with clustered intervals."""
    by_type = accuracy_table(records, predictions, by="question_type")
    return {"overall": by_type.pop("overall"), "question_type": by_type,
            "category": {k: v for k, v in accuracy_table(records, predictions, by="category").items()
                         if k != "overall"}}


EVAL_FILE = "eval.json"


@dataclass
class EvalConfig:
    """One evaluation: a model (and optionally a trained adapter) on a dataset under a condition."""

    model: str
    data: str
    condition: str = "image"
    scoring: str = "option"
    adapter: str | None = None  # a training run directory (its ``adapter/``)
    describer: str = "full"
    batch_size: int = 16
    max_new_tokens: int = 3  # generate scoring: K-VISCUIT's reference generates 3 tokens

    def validate(self) -> None:
        if self.condition not in CONDITIONS:
            raise TextonlyError(f"--condition {self.condition}: choose from {', '.join(CONDITIONS)}")
        if self.scoring not in SCORINGS:
            raise TextonlyError(f"--scoring {self.scoring}: choose from {', '.join(SCORINGS)}")
        if self.adapter and not (Path(self.adapter) / "adapter").is_dir():
            raise TextonlyError(f"--adapter {self.adapter}: no finished training run there (no adapter/ folder)")


def _eval_fingerprint(config: EvalConfig) -> str:
    from textonly.provenance import data_hash, model_identity

    adapter = (Path(config.adapter) / "run.json").read_bytes() if config.adapter else b""
    code = (Path(__file__).parent / "evaluate.py").read_bytes() + (Path(__file__).parent / "prompts.py").read_bytes()
    return build_key(asdict(config), data_hash(config.data), model_identity(config.model), adapter, code)


def load_evaluated_model(config: EvalConfig):
    """The model (with the run's adapter, if any) and its processor."""
    from textonly.hub import load_model

    model, processor = load_model(config.model)
    if config.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, Path(config.adapter) / "adapter")
    return model, processor


def evaluate(config: EvalConfig, out: str | Path, *, progress: bool = True, force: bool = False) -> dict:
    """Evaluate into ``out`` (``predictions.jsonl``, then ``eval.json`` last); a finished one is reused."""
    from textonly.data import load_dataset
    from textonly.energy import track
    from textonly.provenance import provenance

    config.validate()
    out = Path(out)
    key = _eval_fingerprint(config)
    if not force and finished_build(out / EVAL_FILE, key):
        return json.loads((out / EVAL_FILE).read_text())
    records = load_dataset(config.data).records
    model, processor = load_evaluated_model(config)
    tokens: dict = {}
    kwargs = dict(condition=config.condition, describer=config.describer, batch_size=config.batch_size,
                  progress=progress, counts=tokens)
    with track("evaluate", out) as energy:
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
               "energy": energy, "provenance": provenance(data=config.data)}
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
    return mcnemar(read_predictions(eval_a), read_predictions(eval_b))
