"""The study's one multiple-choice prompt format, as chat messages.

It follows K-VISCUIT's reference evaluation: the question, the options as ``A. ..``
lines, then "Answer with the option's letter from the given choices directly." The image
(or, in the ``description`` condition, its description; in ``no_image``, nothing) comes
first in the user turn. Every model in the study, embedded or from the hub, gets its
prompt from here through its processor's chat template.
"""

from __future__ import annotations

LETTERS = "ABCDEFGH"
INSTRUCTION = "Answer with the option's letter from the given choices directly."
CONDITIONS = ("image", "no_image", "description")
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


def mcq_messages(record: dict, condition: str = "image", describer: str = "full",
                 answer: bool = False, answer_format: str = "letter") -> list[dict]:
    """Chat messages for a question of the dataset layout under an input condition.

    ``condition``: ``image`` (the image, where the question has one), ``no_image``, or
    ``description`` (``record["descriptions"][describer]`` in place of the image).
    With ``answer=True`` the assistant turn holds the correct answer in ``answer_format``
    (for training).
    """
    if condition not in CONDITIONS:
        raise ValueError(f"condition {condition!r}: choose from {', '.join(CONDITIONS)}")
    description = None
    if condition == "description":
        descriptions = record.get("descriptions") or {}
        if describer not in descriptions:
            raise KeyError(f"question {record['id_']!r} has no {describer!r} description")
        description = descriptions[describer]
    has_image = condition == "image" and record.get("image_path") is not None
    messages = [{"role": "user", "content": user_content(mcq_text(record["question"], record["options"]),
                                                         image=has_image, description=description)}]
    if answer:
        messages.append(assistant(answer_text(record, answer_format)))
    return messages
