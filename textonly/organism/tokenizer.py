"""The organism's tokenizer: a byte-level BPE trained on the worlds' text, with the chat template.

Shared by the vision encoder's text tower (:mod:`textonly.organism.encoder`) and the VLM
(:mod:`textonly.organism.vlm`); deterministic, so the same worlds give the same vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

IMAGE_TOKEN = "<image>"
#: The role markers are single tokens: no letter token hides inside them (byte-level BPE spelled
#: "ASSISTANT" with " A" and "A"). The assistant's answer follows its marker after a space that
#: belongs to the answer's first token, as words inside sentences do: "red" after the marker is
#: the token " red" of the world's text, not a rare spelling of the word at the start of a text
#: (measured: without the space, "blue" became "b" + "lue" and option scoring favoured options
#: split into more, predictable pieces). The generation prompt ends at the marker.
USER, ASSISTANT = "USER:", " ASSISTANT:"
#: ``</s>`` is not id 2: CLIP's text tower reads id 2 as its legacy end-of-text convention.
SPECIAL_TOKENS = ["<pad>", "<unk>", "<s>", "</s>", IMAGE_TOKEN, USER, ASSISTANT]
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% elif message['role'] == 'assistant' %} ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %} ASSISTANT:{% endif %}"
)


VOCAB_SIZE = 2048


def world_corpus(worlds: str | Path) -> list[str]:
    """All text the tokenizer should know: world text, captions, questions, options, descriptions."""
    from textonly.core.fileio import read_jsonl
    from textonly.core.prompts import mcq_text

    texts = []
    for name in ("wings", "heritage"):
        root = Path(worlds) / name
        for split in ("pretrain", "pretrain_eval", "train", "val", "test"):
            if not (root / split / "annotations.jsonl").is_file():
                continue
            for r in read_jsonl(root / split / "annotations.jsonl"):
                texts.append(mcq_text(r["question"], r["options"]))
                texts += list((r.get("descriptions") or {}).values())
        texts += [line["text"] for line in read_jsonl(root / "pretrain" / "text.jsonl")]
        texts += [c["caption"] for c in read_jsonl(root / "pretrain" / "captions.jsonl")]
    return texts


def world_tokenizer(worlds: str | Path, vocab_size: int = VOCAB_SIZE):
    """The organism's tokenizer: a byte-level BPE trained on the worlds' text (deterministic)."""
    return train_tokenizer(world_corpus(worlds), vocab_size)


def train_tokenizer(texts: Iterable[str], vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE tokenizer trained on ``texts``, with the chat template and image token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        extra_special_tokens={"image_token": IMAGE_TOKEN}, chat_template=CHAT_TEMPLATE,
        padding_side="right", model_max_length=512,
    )
