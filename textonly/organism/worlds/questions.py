"""Multiple-choice questions about a world's individuals and named kinds: four options, the
answer at a given position, distractors mostly from the look-alike group (or the attribute's
other values)."""

from __future__ import annotations

import numpy as np

from textonly.core.errors import TextonlyError
from textonly.organism.worlds import text
from textonly.organism.worlds.vocab import World


def _options(answer_text: str, near: list[str], far: list[str], answer_pos: int, rng: np.random.Generator,
             n_near: int = 2) -> tuple[list[str], int]:
    """Four options: the answer at ``answer_pos``, distractors mostly from ``near`` (the look-alikes)."""
    near = [x for x in dict.fromkeys(near) if x != answer_text]
    far = [x for x in dict.fromkeys(far) if x != answer_text and x not in near]
    take_near = min(n_near, len(near))
    picks = [near[i] for i in rng.choice(len(near), size=take_near, replace=False)] if take_near else []
    rest = [x for x in far if x not in picks] + [x for x in near if x not in picks]
    need = 3 - len(picks)
    if len(rest) < need:
        raise TextonlyError(f"not enough distinct options for {answer_text!r}")
    # far ones first (random among them), near leftovers only if the pool is short
    far_rest = [x for x in rest if x in far]
    pool = far_rest if len(far_rest) >= need else rest
    picks += [pool[i] for i in rng.choice(len(pool), size=need, replace=False)]
    picks = [picks[i] for i in rng.permutation(3)]
    return picks[:answer_pos] + [answer_text] + picks[answer_pos:], answer_pos


class _Questions:
    """Type 1 and Type 2 questions about a named kind, distractors mostly from its look-alike group."""

    def __init__(self, world: World, species: list[dict], rng: np.random.Generator):
        self.world, self.species, self.rng = world, species, rng
        self.by_group: dict[int, list[dict]] = {}
        for s in species:
            self.by_group.setdefault(s["group"], []).append(s)
        self.all_names = [s["name"] for s in species]

    def type1(self, subject: dict, pos: int, qid: str, image: str, desc: dict | None) -> dict:
        near = [s["name"] for s in self.by_group[subject["group"]]]
        # the rest from the same category (a dish among dishes), so no option gives itself away
        same = [s["name"] for s in self.species
                if s["category"] == subject["category"] and s["group"] != subject["group"]]
        options, answer = _options(subject["name"], near, same if len(same) >= 3 else self.all_names, pos, self.rng)
        record = {"question": text.pick(self.rng, self.world.type1_questions), "options": options, "answer": answer,
                  "category": subject["category"], "id_": qid, "question_type": 1, "image_path": image,
                  "subject": subject["name"], "asks": "name"}
        return {**record, "descriptions": desc} if desc else record

    def type2(self, subject: dict, fact_name: str, pos: int, qid: str, image: str, desc: dict | None) -> dict:
        fact = next(f for f in self.world.facts if f.name == fact_name)
        near = [s["facts"][fact_name] for s in self.by_group[subject["group"]]]
        options, answer = _options(subject["facts"][fact_name], near, list(fact.values), pos, self.rng)
        record = {"question": text.pick(self.rng, fact.questions).format(thing=self.world.thing), "options": options,
                  "answer": answer, "category": subject["category"], "id_": qid, "question_type": 2,
                  "image_path": image, "subject": subject["name"], "asks": fact_name}
        return {**record, "descriptions": desc} if desc else record


def _attribute_question(world: World, attributes: dict, attr_name: str, pos: int, qid: str, image: str,
                        rng: np.random.Generator) -> dict:
    attr = world.attribute(attr_name)
    others = [v for v in attr.values + attr.extra_options if v != attributes[attr_name]]
    options, answer = _options(attributes[attr_name], [], others, pos, rng)
    return {"question": attr.question.format(thing=world.thing), "options": options, "answer": answer,
            "category": attr_name, "id_": qid, "question_type": 0, "image_path": image, "asks": attr_name}


def _knowledge_question(world: World, subject: dict, fact, template: int, pos: int, qid: str,
                        rng: np.random.Generator) -> dict:
    question = fact.questions[template].format(thing=world.thing).replace(
        f"the {world.thing} in the image", f"the {subject['name']}")
    options, answer = _options(subject["facts"][fact.name], [], list(fact.values), pos, rng)
    return {"question": question, "options": options, "answer": answer, "category": subject["category"],
            "id_": qid, "question_type": 2, "image_path": None, "subject": subject["name"], "asks": fact.name}
