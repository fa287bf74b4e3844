"""The encoder's rendered material: a world's generic individuals and pretraining kinds, each
image with its caption (no image of a target kind, ever). Rendering is cheap, so the images
are rendered fresh, as many as the encoder's config asks, rather than read from a fixed set.

* generic individuals come in *look-alike families*: a random individual and variants that
  each change one attribute, drawn into the same batch, so every image meets negatives
  that differ from it in a single detail (hard negatives, as look-alike species are);
* each image is paired with its full caption.

Captions of a single attribute ("A butterfly. Its wings are tailed.") are the zero-shot
prompts. Mixed into training (half the captions, with multi-positive targets) they made
the text tower collapse: within 300 steps every caption had the same embedding and the
zero-shot colour accuracy stayed at chance, against 0.80 with full captions alone.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from textonly.organism.encoder_config import IMAGE_SIZE, EncoderConfig
from textonly.organism.worlds import text as world_text
from textonly.organism.worlds.render import is_drawable, render
from textonly.organism.worlds.species import _random_attributes, _rng
from textonly.organism.worlds.vocab import WORLDS, World


def attribute_caption(world: World, attribute: str, value: str) -> str:
    """A caption of one attribute: "A butterfly. Its wings are tailed." (the zero-shot prompts too)."""
    phrase = world.attribute(attribute).phrases[0].format(value=value, thing=world.thing)
    return f"A {world.thing}. {phrase}"


def _family(world: World, rng: np.random.Generator, size: int, forbidden: set) -> list[dict]:
    """A random generic individual and variants that each change one attribute (none of them a named kind)."""
    while True:
        base = _random_attributes(world, rng)
        if tuple(sorted(base.items())) not in forbidden:
            break
    members, seen = [base], {tuple(sorted(base.items()))}
    for _ in range(20 * size):
        if len(members) == size:
            break
        attr = world.attributes[int(rng.integers(len(world.attributes)))]
        value = attr.values[int(rng.integers(len(attr.values)))]
        variant = {**base, attr.name: value}
        key = tuple(sorted(variant.items()))
        if key not in seen and key not in forbidden and is_drawable(world.name, variant):
            seen.add(key)
            members.append(variant)
    while len(members) < size:  # rare: too few drawable variants; fill with fresh individuals
        extra = _random_attributes(world, rng)
        if tuple(sorted(extra.items())) not in forbidden | seen:
            seen.add(tuple(sorted(extra.items())))
            members.append(extra)
    return members


def _render_chunk(args: tuple) -> np.ndarray:
    world_name, jobs, seed, size = args
    out = np.empty((len(jobs), size, size, 3), np.uint8)
    for i, (stream, index, attributes) in enumerate(jobs):
        out[i] = np.asarray(render(world_name, attributes, _rng(seed, world_name, stream, index), size))
    return out


def render_images(world_name: str, attributes: list[dict], seed: int, stream: str, size: int = IMAGE_SIZE,
                  workers: int | None = None, progress: bool = True) -> np.ndarray:
    """Render individuals (each from its own seed: ``seed``, the world, ``stream``, its index) as uint8 NHWC."""
    jobs = [(stream, i, a) for i, a in enumerate(attributes)]
    chunks = [jobs[i:i + 250] for i in range(0, len(jobs), 250)]
    workers = workers or min(os.cpu_count() or 1, 4)
    bar = tqdm(total=len(jobs), desc=f"rendering {world_name} ({stream})", unit="img", disable=not progress)
    parts = []
    args = [(world_name, chunk, seed, size) for chunk in chunks]
    if workers > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(workers) as pool:
            for part in pool.map(_render_chunk, args):
                parts.append(part)
                bar.update(len(part))
    else:
        for a in args:
            parts.append(_render_chunk(a))
            bar.update(len(parts[-1]))
    bar.close()
    return np.concatenate(parts) if parts else np.empty((0, size, size, 3), np.uint8)


@dataclass
class WorldMaterial:
    """One world's encoder material: images, their attributes and names, and their captions."""

    world: World
    pixels: np.ndarray  # uint8 NHWC
    attributes: list[dict]
    names: list[str | None]
    captions: list[str]  # the full caption of each image


def encoder_material(config: EncoderConfig, world_name: str, *, progress: bool = True) -> WorldMaterial:
    """Render one world's generic families and pretraining kinds for the encoder (never a target)."""
    root = Path(config.worlds) / world_name
    info = json.loads((root / "world.json").read_text())
    seed = info["settings"]["seed"]
    world = WORLDS[world_name]
    forbidden = {tuple(sorted(s["attributes"].items())) for s in info["species"]}
    rng = _rng(seed, world_name, "encoder", config.seed)
    attributes, names = [], []
    for _ in range(config.images_per_world // config.family_size):
        attributes += _family(world, rng, config.family_size, forbidden)
        names += [None] * config.family_size
    for kind in (s for s in info["species"] if s["role"] == "pretrain"):
        attributes += [kind["attributes"]] * config.images_per_kind
        names += [kind["name"]] * config.images_per_kind
    pixels = render_images(world_name, attributes, seed, f"encoder-{config.seed}", config.image_size,
                           progress=progress)
    caption_rng = _rng(seed, world_name, "encoder-captions", config.seed)
    captions = [world_text.caption(world, a, caption_rng, n) for a, n in zip(attributes, names)]
    return WorldMaterial(world, pixels, attributes, names, captions)
