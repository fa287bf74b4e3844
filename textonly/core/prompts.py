"""The study's one multiple-choice prompt format, as chat messages.

It follows K-VISCUIT's reference evaluation: the question, the options as ``A. ..``
lines, then "Answer with the option's letter from the given choices directly." The image
(or, in the ``description`` condition, its description; in ``no_image``, nothing) comes
first in the user turn. Every model in the study, embedded or from the hub, gets its
prompt from here through its processor's chat template.
"""

from __future__ import annotations

from textonly.core.errors import TextonlyError

LETTERS = "ABCDEFGH"
INSTRUCTION = "Answer with the option's letter from the given choices directly."
CONDITIONS = ("image", "no_image", "description")
#: The study's modes, in its order: ``original`` (the base model, not fine-tuned) and the
#: fine-tuning modes (:data:`TRAIN_MODES`).
MODES = ("original", "image_text", "text_only", "mixed")
TRAIN_MODES = MODES[1:]
#: What the assistant answers: the option's ``letter`` (the paper's format) or the
#: ``option``'s text itself (the cloze format that small models are trained and scored in).
ANSWER_FORMATS = ("option", "letter")
#: How a model's answer to a question is read (see :mod:`textonly.models.scoring`).
SCORINGS = ("option", "letter", "generate")


def mcq_text(question: str, options: list[str]) -> str:
    """The question and its lettered options, then the instruction."""
    lines = [question] + [f"{LETTERS[i]}. {option}" for i, option in enumerate(options)]
    return "\n".join(lines + [INSTRUCTION])


def user_content(text: str, *, image: bool = False, description: str | None = None) -> list[dict]:
    """A user turn: optionally an image or a description in its place, then ``text``."""
    content: list[dict] = []
    if image:
        content.append({"type": "image"})
    if description is not None:
        content.append({"type": "text", "text": f"Description of the image: {description}\n"})
    content.append({"type": "text", "text": text})
    return content


def answer_text(record: dict, answer_format: str = "letter", option: int | None = None) -> str:
    """The assistant's answer naming option ``option`` (default: the correct one) in ``answer_format``."""
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"answer format {answer_format!r}: choose from {', '.join(ANSWER_FORMATS)}")
    k = record["answer"] if option is None else option
    return LETTERS[k] if answer_format == "letter" else record["options"][k]


def assistant(text: str) -> dict:
    """An assistant turn holding ``text``."""
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


#: The description a record's text stands in for its image with, unless told otherwise: the
#: worlds' ground truth at full quality (:func:`textonly.organism.worlds.text.oracle_description`).
DEFAULT_DESCRIPTION = "oracle-full"


def check_descriptions(records: list[dict], description: str, where: str = "the dataset") -> None:
    """Refuse questions that lack ``description`` (a name in their ``descriptions``), in one line
    that names the descriptions they do have."""
    missing = [r["id_"] for r in records if description not in (r.get("descriptions") or {})]
    if missing:
        names = sorted({name for r in records for name in (r.get("descriptions") or {})})
        raise TextonlyError(f"{where}: {len(missing)} of {len(records)} questions have no {description!r} "
                            f"description (first: {missing[0]}); descriptions there: {', '.join(names) or 'none'} "
                            "(`python -m textonly convert` adds them)")


def mcq_messages(record: dict, condition: str = "image", description: str = DEFAULT_DESCRIPTION,
                 answer: bool = False, answer_format: str = "letter") -> list[dict]:
    """Chat messages for a question of the dataset layout under an input condition.

    ``condition``: ``image`` (the image, where the question has one), ``no_image``, or
    ``description`` (``record["descriptions"][description]`` in place of the image).
    With ``answer=True`` the assistant turn holds the correct answer in ``answer_format``
    (for training).
    """
    if condition not in CONDITIONS:
        raise TextonlyError(f"condition {condition!r}: choose from {', '.join(CONDITIONS)}")
    text = None
    if condition == "description":
        check_descriptions([record], description, where=f"question {record['id_']!r}")
        text = record["descriptions"][description]
    has_image = condition == "image" and record.get("image_path") is not None
    messages = [{"role": "user", "content": user_content(mcq_text(record["question"], record["options"]),
                                                         image=has_image, description=text)}]
    if answer:
        messages.append(assistant(answer_text(record, answer_format)))
    return messages
