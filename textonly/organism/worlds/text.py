"""Text of the worlds: made-up names, descriptions at graded quality, captions, world text.

Descriptions are what ``text_only`` training puts in place of an image. A record keeps them
under the *description*'s name, ``oracle-<quality>`` (:func:`oracle_description`), the same name
that the oracle describer's text-only twin and the training and evaluation that read it use.
The qualities:

* ``full``: every visual attribute, then the non-visual facts (the paper's GPT-4o
  descriptions cover visual traits plus habitat and behaviour, or history and culture);
* ``partial``: two or three of the visual attributes, no facts;
* ``wrong``: like ``full`` with one visual attribute given a wrong value;
* ``name_only``: only the name of what is shown.

Phrasing varies (several templates per attribute, shuffled sentence order), drawn from a
random generator that the caller seeds.
"""

from __future__ import annotations

import numpy as np

from textonly.organism.worlds.vocab import CODAS, NUCLEI, ONSETS, World

QUALITIES = ("full", "partial", "wrong", "name_only")


def oracle_description(quality: str) -> str:
    """The name of the worlds' ground-truth description at ``quality`` (a key of a record's
    ``descriptions``): ``oracle-full``, ``oracle-partial``, ..."""
    return f"oracle-{quality}"


def pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def made_up_word(rng: np.random.Generator, syllables: int) -> str:
    word = "".join(pick(rng, ONSETS) + pick(rng, NUCLEI) + (pick(rng, CODAS) if i == syllables - 1 else "")
                   for i in range(syllables))
    return word.capitalize()


def appearance(world: World, attributes: dict[str, str], rng: np.random.Generator,
               names: list[str] | None = None) -> str:
    """Sentences describing the given attributes (all of them, or those in ``names``), shuffled."""
    chosen = [a for a in world.attributes if names is None or a.name in names]
    sentences = [pick(rng, a.phrases).format(value=attributes[a.name], thing=world.thing) for a in chosen]
    order = rng.permutation(len(sentences))
    return " ".join(sentences[i] for i in order)


def facts_text(world: World, facts: dict[str, str]) -> str:
    return " ".join(f.description.format(value=facts[f.name]) for f in world.facts)


def descriptions(world: World, subject: dict, rng: np.random.Generator) -> dict[str, str]:
    """The four descriptions of an individual of ``subject`` (a species or object record), by name."""
    attrs = subject["attributes"]
    full = appearance(world, attrs, rng) + " " + facts_text(world, subject["facts"])
    k = int(rng.integers(2, 4))
    names = list(rng.choice([a.name for a in world.attributes], size=k, replace=False))
    partial = appearance(world, attrs, rng, names)
    variable = [a for a in world.attributes if a.name != world.category_attribute]
    changed = pick(rng, variable)
    wrong_value = pick(rng, [v for v in changed.values if v != attrs[changed.name]])
    wrong = appearance(world, {**attrs, changed.name: wrong_value}, rng) + " " + facts_text(world, subject["facts"])
    name_only = pick(rng, world.name_only_templates).format(name=subject["name"])
    texts = {"full": full, "partial": partial, "wrong": wrong, "name_only": name_only}
    return {oracle_description(q): texts[q] for q in QUALITIES}


def caption(world: World, attributes: dict[str, str], rng: np.random.Generator, name: str | None = None) -> str:
    """An image caption: the appearance, with the name when the individual is a named species/object."""
    text = appearance(world, attributes, rng)
    if name is None:
        return f"A {world.thing}. {text}"
    return pick(rng, world.caption_templates).format(name=name, appearance=text)


def world_statements(world: World, subject: dict, rng: np.random.Generator, lookalikes: list[dict]) -> list[dict]:
    """Text about one species/object: its facts (two phrasings each), its appearance, its look-alikes."""
    out = []
    for fact in world.facts:
        templates = list(fact.statements)
        for i in rng.choice(len(templates), size=2, replace=False):
            out.append({"kind": "fact", "fact": fact.name,
                        "text": templates[i].format(name=subject["name"], value=subject["facts"][fact.name])})
    out.append({"kind": "appearance", "fact": None,
                "text": f"The {subject['name']} looks like this. " + appearance(world, subject["attributes"], rng)})
    for other in lookalikes:
        diff = [a.name for a in world.attributes if subject["attributes"][a.name] != other["attributes"][a.name]]
        detail = " ".join(
            pick(rng, world.attribute(d).phrases).format(value=other["attributes"][d], thing=world.thing) for d in diff
        )
        out.append({"kind": "lookalike", "fact": None,
                    "text": f"The {subject['name']} is easily confused with the {other['name']}. "
                            f"Unlike it, the {other['name']} differs: {detail}"})
    return out
