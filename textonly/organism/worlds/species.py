"""A world's named kinds (species/objects) in look-alike groups, and how much of the world to make.

Every random draw takes a generator made by :func:`_rng` from the world's seed and a few
keys, so a draw depends only on them (not on what was drawn before in another stream).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from textonly.core.errors import TextonlyError
from textonly.organism.worlds import text
from textonly.organism.worlds.render import is_drawable
from textonly.organism.worlds.vocab import World


@dataclass(frozen=True)
class Sizes:
    """How much of a world to make. Defaults mirror the paper's dataset sizes."""

    groups: int
    group_size: int
    targets: int
    test_images_per_target: int
    type2_questions: int
    generic_images: int
    images_per_pretrain_species: int
    attribute_questions_per_image: int
    eval_generic_images: int


SIZES = {
    # BUTTERFLY: 100 training samples; 400 test questions = 200 Type 1 + 200 Type 2.
    "wings": Sizes(groups=30, group_size=5, targets=100, test_images_per_target=2, type2_questions=200,
                   generic_images=2400, images_per_pretrain_species=16, attribute_questions_per_image=6,
                   eval_generic_images=300),
    # K-VISCUIT: 237 training samples; 657 test questions = 237 Type 1 + 420 Type 2, 10 categories.
    "heritage": Sizes(groups=60, group_size=5, targets=237, test_images_per_target=1, type2_questions=420,
                      generic_images=2400, images_per_pretrain_species=16, attribute_questions_per_image=6,
                      eval_generic_images=300),
}


def _rng(seed: int, *keys: str | int) -> np.random.Generator:
    """A generator that depends only on the seed and the keys (stable across runs and processes)."""
    parts = [seed] + [k if isinstance(k, int) else zlib.crc32(k.encode()) for k in keys]
    return np.random.default_rng(parts)


def category_of(world: World, attributes: dict[str, str]) -> str:
    attr = world.attribute(world.category_attribute)
    return world.categories[attr.values.index(attributes[world.category_attribute])]


def _random_attributes(world: World, rng: np.random.Generator, fixed: dict[str, str] | None = None) -> dict[str, str]:
    while True:
        attrs = {a.name: text.pick(rng, a.values) for a in world.attributes}
        attrs.update(fixed or {})
        if is_drawable(world.name, attrs):
            return attrs


def _key(attributes: dict[str, str]) -> tuple:
    return tuple(sorted(attributes.items()))


def make_species(world: World, sizes: Sizes, seed: int) -> list[dict]:
    """Species/objects in look-alike groups: a prototype and variants that change one attribute each.

    Any two members of a group therefore differ in one or two attributes; the attribute
    that fixes the category is never varied. Facts are distinct inside a group where the
    fact has enough values, so a Type 2 answer needs the right member, not just the group.
    """
    rng = _rng(seed, world.name, "species")
    used: set[tuple] = set()  # the looks already taken
    names: set[str] = set()
    species: list[dict] = []
    for g in range(sizes.groups):
        species += _group(world, sizes, g, rng, used, names)
    _choose_targets(world, sizes, species, rng)
    return species


def _group(world: World, sizes: Sizes, g: int, rng: np.random.Generator, used: set, names: set) -> list[dict]:
    """Look-alike group ``g`` (its category by turns): the prototype first, its role decided later."""
    cat_attr = world.attribute(world.category_attribute)
    cat_value = cat_attr.values[g % len(cat_attr.values)]
    members = _members(world, sizes.group_size, cat_attr.name, cat_value, rng, used)
    genus = text.made_up_word(rng, 2) if world.name == "wings" else None
    facts = _member_facts(world, len(members), rng)
    return [{"name": _new_name(rng, names, genus, cat_value), "group": g, "category": category_of(world, attrs),
             "role": "pretrain" if i == 0 else "candidate", "attributes": attrs, "facts": facts[i]}
            for i, attrs in enumerate(members)]


def _members(world: World, size: int, cat_name: str, cat_value: str, rng: np.random.Generator,
             used: set) -> list[dict]:
    """A new prototype of the category and variants that each change one other attribute."""
    while True:
        proto = _random_attributes(world, rng, {cat_name: cat_value})
        if _key(proto) not in used:
            break
    members = [proto]
    used.add(_key(proto))
    variable = [a for a in world.attributes if a.name != cat_name]
    while len(members) < size:
        attr = text.pick(rng, variable)
        variant = {**proto, attr.name: text.pick(rng, [v for v in attr.values if v != proto[attr.name]])}
        if is_drawable(world.name, variant) and _key(variant) not in used:
            used.add(_key(variant))
            members.append(variant)
    return members


def _member_facts(world: World, n: int, rng: np.random.Generator) -> list[dict]:
    """Each member's facts: distinct inside the group where a fact has at least ``n`` values."""
    fact_values = {}
    for fact in world.facts:
        values = list(fact.values)
        replace = len(values) < n
        fact_values[fact.name] = [values[i] for i in rng.choice(len(values), size=n, replace=replace)]
    return [{f: fact_values[f][i] for f in fact_values} for i in range(n)]


def _new_name(rng: np.random.Generator, names: set, genus: str | None, cat_value: str) -> str:
    """A made-up name not used before: "<word> <genus>", or "<word> <category value>" without a genus."""
    while True:
        word = text.made_up_word(rng, int(rng.integers(2, 4)))
        name = f"{word} {genus}" if genus else f"{word} {cat_value}"
        if name not in names and word.lower() != (genus or "").lower():
            names.add(name)
            return name


def _choose_targets(world: World, sizes: Sizes, species: list[dict], rng: np.random.Generator) -> None:
    """Make ``sizes.targets`` of the candidates the study's targets; the rest become pretraining kinds."""
    candidates = [s for s in species if s["role"] == "candidate"]
    if len(candidates) < sizes.targets:
        raise TextonlyError(f"{world.name}: {len(candidates)} candidate targets, {sizes.targets} requested")
    chosen = set(rng.choice(len(candidates), size=sizes.targets, replace=False).tolist())
    for i, s in enumerate(candidates):
        s["role"] = "target" if i in chosen else "pretrain"
