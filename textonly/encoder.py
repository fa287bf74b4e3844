"""The organism's vision encoder: a CLIP model pretrained on its own, then frozen in the VLM.

As real VLMs take a contrastively pretrained CLIP tower, the organism's LLaVA takes the
vision half of a ``CLIPModel`` trained here on rendered images of *generic individuals*
and *pretraining kinds* of both worlds with their captions (no image of a target kind,
ever). Rendering is cheap, so the images are rendered fresh for the encoder, as many as
its config asks, rather than read from a fixed set:

* generic individuals come in *look-alike families*: a random individual and variants that
  each change one attribute, drawn into the same batch, so every image meets negatives
  that differ from it in a single detail (hard negatives, as look-alike species are);
* each image is paired with its caption; a caption that another image of the batch also
  satisfies (the same kind, or the same look) counts as a positive for it too (a
  multi-positive InfoNCE loss), so repeated kinds are not false negatives;
* an auxiliary loss asks a linear head on the patch features that the VLM reads (their
  mean at :data:`FEATURE_LAYER`) for the attributes that the image's caption states
  (``attribute_loss_weight``; 0 is pure CLIP). Measured
  here (`small`, 6,000 steps of 32), pure CLIP learned the colours (linear probe 0.94-1.00)
  but little of the shapes, counts and ornaments (0.25-0.56): the contrastive task is
  mostly solved by colour, and the CPU budget allows too few images for the rest.

Captions of a single attribute ("A butterfly. Its wings are tailed.") are the zero-shot
prompts. Mixed into training (half the captions, with multi-positive targets) they made
the text tower collapse: within 300 steps every caption had the same embedding and the
zero-shot colour accuracy stayed at chance, against 0.80 with full captions alone.

The encoder is built once per world seed and size and reused by every base model and
seed. Its card reports, on the worlds' held-out generic images (``pretrain_eval``), the
zero-shot accuracy per attribute (the one-attribute caption closest to the image) and a
linear probe's accuracy on its image features.
"""

from __future__ import annotations

import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from textonly.errors import TextonlyError
from textonly.fileio import (atomic_directory, build_key, dumps_json, dumps_jsonl, finished_build, read_jsonl,
                             save_checkpoint)
from textonly.worlds import text as world_text
from textonly.worlds.build import _random_attributes, _rng, is_drawable
from textonly.worlds.render import render
from textonly.worlds.vocab import WORLDS, World

WORLD_NAMES = ("wings", "heritage")
IMAGE_SIZE = 64
PATCH_SIZE = 8


@dataclass(frozen=True)
class EncoderSize:
    """Widths and depths of the CLIP towers."""

    vision_hidden: int
    vision_layers: int
    vision_heads: int
    text_hidden: int
    text_layers: int
    projection: int


ENCODER_SIZES = {
    "tiny": EncoderSize(96, 3, 3, 96, 2, 96),
    "small": EncoderSize(128, 4, 4, 128, 2, 128),
    "base": EncoderSize(192, 6, 6, 128, 3, 128),
}
#: Optimizer steps per size (each step is one batch of one world, the worlds taking turns).
#: Measured on `small`: at 6000 steps wing shape, spot count, band and the heritage kind
#: were still rising (linear probe 0.44-0.72) and the attribute loss still falling.
DEFAULT_STEPS = {"tiny": 4000, "small": 10000, "base": 12000}


@dataclass
class EncoderConfig:
    """Everything that determines a pretrained vision encoder (its hash names the build)."""

    size: str = "small"
    worlds: str = "data/worlds"
    seed: int = 0
    steps: int | None = None  # None: per size
    batch_size: int = 32  # images per step (families of `family_size`)
    family_size: int = 4
    images_per_world: int = 24000  # rendered generic individuals per world
    images_per_kind: int = 24  # rendered images of each pretraining kind
    #: Weight of the auxiliary attribute loss (a linear head per world on the mean patch
    #: features that the VLM reads, predicting the attributes its caption states); 0 is pure CLIP.
    attribute_loss_weight: float = 1.0
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    image_size: int = IMAGE_SIZE
    patch_size: int = PATCH_SIZE
    checkpoint_every: int = 250
    probe_images: int = 2000  # rendered per world to fit the linear probe

    def resolved_steps(self) -> int:
        return self.steps if self.steps is not None else DEFAULT_STEPS[self.size]

    def validate(self) -> None:
        if self.size not in ENCODER_SIZES:
            raise TextonlyError(f"--size {self.size}: choose from {', '.join(ENCODER_SIZES)}")
        if self.batch_size % self.family_size:
            raise TextonlyError(f"batch size {self.batch_size} is not a multiple of the family size {self.family_size}")
        for name in WORLD_NAMES:
            if not (Path(self.worlds) / name / "world.json").is_file():
                raise TextonlyError(f"{Path(self.worlds) / name}: no world there; run "
                                    f"`python -m textonly worlds build --out {self.worlds}` first")


def world_seed(worlds: str | Path) -> int:
    """The seed both worlds under ``worlds`` were built with (they must agree)."""
    seeds = {json.loads((Path(worlds) / name / "world.json").read_text())["settings"]["seed"] for name in WORLD_NAMES}
    if len(seeds) != 1:
        raise TextonlyError(f"{worlds}: the worlds were built with different seeds {sorted(seeds)}")
    return seeds.pop()


def encoder_folder(models: str | Path, size: str, worlds: str | Path) -> Path:
    """Where the encoder of ``size`` for the worlds under ``worlds`` lives: one per world seed and size."""
    return Path(models) / f"clip-{size}-worlds{world_seed(worlds)}"


# ---------------------------------------------------------------- the rendered material


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


# ---------------------------------------------------------------- the model


def build_tokenizer(worlds: str | Path):
    """The byte-level BPE of the worlds' text (:func:`textonly.tokenizer.world_tokenizer`), adding
    ``</s>`` after every text, as CLIP's text tower pools at its end-of-text token."""
    from tokenizers import processors

    from textonly.tokenizer import world_tokenizer

    tokenizer = world_tokenizer(worlds)
    backend = tokenizer.backend_tokenizer
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", tokenizer.eos_token_id)])
    tokenizer.chat_template = None
    return tokenizer


def make_image_processor(image_size: int = IMAGE_SIZE):
    """Resize the short side, centre-crop, normalise to [-1, 1] (the encoder's and the VLM's)."""
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                 crop_size={"height": image_size, "width": image_size},
                                 image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])


def make_processor(tokenizer, image_size: int = IMAGE_SIZE):
    """A ``CLIPProcessor``: the organism's image processor and the worlds' tokenizer."""
    from transformers import CLIPProcessor

    return CLIPProcessor(image_processor=make_image_processor(image_size), tokenizer=tokenizer)


def make_model(config: EncoderConfig, tokenizer):
    """A randomly initialised ``CLIPModel`` of the config's size."""
    from transformers import CLIPConfig, CLIPModel

    s = ENCODER_SIZES[config.size]
    vision = dict(image_size=config.image_size, patch_size=config.patch_size, hidden_size=s.vision_hidden,
                  intermediate_size=4 * s.vision_hidden, num_hidden_layers=s.vision_layers,
                  num_attention_heads=s.vision_heads, projection_dim=s.projection)
    text = dict(vocab_size=len(tokenizer), hidden_size=s.text_hidden, intermediate_size=4 * s.text_hidden,
                num_hidden_layers=s.text_layers, num_attention_heads=max(1, s.text_hidden // 32),
                max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, projection_dim=s.projection)
    torch.manual_seed(config.seed)
    return CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=s.projection))


def _features(model, pixel_values=None, input_ids=None, attention_mask=None) -> torch.Tensor:
    """L2-normalised image or text embeddings (the projected pooled outputs)."""
    if pixel_values is not None:
        out = model.get_image_features(pixel_values=pixel_values)
    else:
        out = model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
    out = getattr(out, "pooler_output", out)
    return torch.nn.functional.normalize(out, dim=-1)


def multi_positive_loss(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE where every caption an image satisfies is a positive (and vice versa).

    ``logits[i, j]``: image i against text j; ``positive[i, j]``: image i satisfies text j
    (its diagonal all true). Each row's loss is -log of the softmax mass on its positives.
    """
    neg_inf = torch.finfo(logits.dtype).min
    def side(l, p):
        return (torch.logsumexp(l, dim=1) - torch.logsumexp(l.masked_fill(~p, neg_inf), dim=1)).mean()
    return 0.5 * (side(logits, positive) + side(logits.t(), positive.t()))


#: The tower layer whose patch features the VLM reads (LLaVA's choice, :func:`textonly.vlm.make_model`).
FEATURE_LAYER = -2


def patch_features(seen) -> torch.Tensor:
    """The mean of the patch features (class token excluded) at :data:`FEATURE_LAYER`: what the
    VLM reads, pooled. ``seen``: the vision model's output with its hidden states."""
    return seen.hidden_states[FEATURE_LAYER][:, 1:].mean(1)


def attribute_loss(logits: torch.Tensor, codes: torch.Tensor, world: World) -> torch.Tensor:
    """Mean cross-entropy over a world's attributes; ``logits`` hold each attribute's values in turn."""
    losses, offset = [], 0
    for k, attr in enumerate(world.attributes):
        n = len(attr.values)
        losses.append(torch.nn.functional.cross_entropy(logits[:, offset:offset + n], codes[:, k]))
        offset += n
    return torch.stack(losses).mean()


def _normalise(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> the image processor's float NCHW (mean and std 0.5)."""
    return pixels.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random horizontal flip and a shift of up to 4 pixels (neither changes any attribute)."""
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    size = x.shape[-1]
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4), mode="replicate")
    i, j = (int(v) for v in torch.randint(0, 9, (2,), generator=generator))
    return padded[:, :, i:i + size, j:j + size]


def positives(codes: torch.Tensor, names: torch.Tensor) -> torch.Tensor:
    """``positive[i, j]``: image i satisfies the caption of image j.

    ``codes[i]``: image i's attribute values (as indices); ``names[i]``: its kind's number
    (0 for a generic individual). Image i satisfies caption j when every attribute agrees
    and, if the caption names a kind, it is that kind.
    """
    same = (codes[:, None, :] == codes[None, :, :]).all(-1)
    return same & ((names[None, :] == 0) | (names[:, None] == names[None, :]))


class Batches:
    """Batches of look-alike families of one world, with their captions."""

    def __init__(self, material: WorldMaterial, tokenizer, config: EncoderConfig):
        self.m = material
        self.config = config
        world = material.world
        self.attr_names = [a.name for a in world.attributes]
        values = [{v: k for k, v in enumerate(a.values)} for a in world.attributes]
        self.codes = torch.tensor([[values[k][a[n]] for k, n in enumerate(self.attr_names)]
                                   for a in material.attributes])
        name_ids = {n: i + 1 for i, n in enumerate(sorted({n for n in material.names if n}))}
        self.name_codes = torch.tensor([name_ids.get(n, 0) for n in material.names])
        self.full_ids = tokenizer(material.captions, add_special_tokens=True)["input_ids"]
        self.n_generic = sum(1 for n in material.names if n is None)
        self.pad = tokenizer.pad_token_id

    def draw(self, rng: np.random.Generator, generator: torch.Generator) -> dict:
        c = self.config
        n_fam = c.batch_size // c.family_size
        named = np.flatnonzero(np.asarray([n is not None for n in self.m.names]))
        # families of generic individuals, and (a share in proportion) single images of named kinds
        n_named = int(round(n_fam * c.family_size * len(named) / max(len(self.m.names), 1)))
        families = rng.choice(self.n_generic // c.family_size, size=n_fam - -(-n_named // c.family_size), replace=False)
        index = [f * c.family_size + k for f in families for k in range(c.family_size)]
        index += list(rng.choice(named, size=c.batch_size - len(index), replace=False)) if len(named) else []
        index = torch.tensor(index)
        positive = positives(self.codes[index], self.name_codes[index])
        texts = [self.full_ids[i] for i in index.tolist()]
        width = max(len(t) for t in texts)
        ids = torch.full((len(texts), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(texts), width), dtype=torch.long)
        for r, t in enumerate(texts):
            ids[r, : len(t)] = torch.tensor(t)
            mask[r, : len(t)] = 1
        pixels = _augment(_normalise(torch.from_numpy(self.m.pixels[index.numpy()])), generator)
        return {"pixel_values": pixels, "input_ids": ids, "attention_mask": mask, "positive": positive,
                "codes": self.codes[index]}


# ---------------------------------------------------------------- training


def fingerprint(config: EncoderConfig, tokenizer) -> str:
    """Hash of the config, the worlds, the tokenizer's vocabulary and the code that renders and
    trains: same hash, same encoder. (The vocabulary counts by its content, so an edit to the
    tokenizer's code that leaves it unchanged does not rebuild the encoder.)"""
    worlds = [json.loads((Path(config.worlds) / name / "world.json").read_text())["fingerprint"]
              for name in WORLD_NAMES]
    here = Path(__file__).parent
    code = [(here / "encoder.py").read_bytes()] + [p.read_bytes() for p in sorted((here / "worlds").glob("*.py"))]
    settings = {k: v for k, v in asdict(config).items() if k not in ("worlds", "checkpoint_every")}
    return build_key(settings, tokenizer.backend_tokenizer.to_str(), *worlds, *code)


def _lr_lambda(steps: int, warmup: int):
    return lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, s / steps)))


def _save_checkpoint(path: Path, model, optimizer, scheduler, step: int, rng, generator, curves, key) -> None:
    save_checkpoint(path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                           "scheduler": scheduler.state_dict(), "step": step, "rng": rng.bit_generator.state,
                           "generator": generator.get_state(), "curves": curves, "fingerprint": key})


def pretrain_encoder(config: EncoderConfig, out: str | Path, *, force: bool = False, progress: bool = True) -> Path:
    """Pretrain (or find already pretrained, or resume) the CLIP encoder into ``out``; returns ``out``.

    A checkpoint is kept beside ``out`` (``<out>.checkpoint.pt``) every ``checkpoint_every``
    steps; a killed run started again with the same config resumes from it and ends with
    the weights an uninterrupted run would have.
    """
    config.validate()
    out = Path(out)
    started = time.perf_counter()
    tokenizer = build_tokenizer(config.worlds)
    key = fingerprint(config, tokenizer)
    if not force and finished_build(out / "encoder_config.json", key) and (out / "model.safetensors").is_file():
        return out
    processor = make_processor(tokenizer, config.image_size)
    model = make_model(config, tokenizer)
    render_start = time.perf_counter()
    batches = [Batches(encoder_material(config, name, progress=progress), tokenizer, config) for name in WORLD_NAMES]
    render_seconds = time.perf_counter() - render_start

    steps = config.resolved_steps()
    # the auxiliary attribute heads (one per world) train beside the CLIP model and are not kept
    heads = torch.nn.ModuleDict({name: torch.nn.Linear(model.config.vision_config.hidden_size,
                                                       sum(len(a.values) for a in WORLDS[name].attributes))
                                 for name in WORLD_NAMES})
    trainee = torch.nn.ModuleDict({"clip": model, "heads": heads})
    # no weight decay on gains, biases, embeddings' scale or the temperature (as CLIP)
    decayed = [p for p in trainee.parameters() if p.ndim >= 2]
    kept = [p for p in trainee.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decayed, "weight_decay": config.weight_decay},
                                   {"params": kept, "weight_decay": 0.0}], lr=config.learning_rate, betas=(0.9, 0.98))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(steps, max(1, int(config.warmup_fraction * steps))))
    rng = np.random.default_rng([config.seed, 5])
    generator = torch.Generator().manual_seed(config.seed)
    checkpoint = out.parent / f"{out.name}.checkpoint.pt"
    start, curves = 0, []
    if checkpoint.is_file() and not force:
        state = torch.load(checkpoint, weights_only=False)
        if state.get("fingerprint") == key:
            trainee.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            rng.bit_generator.state = state["rng"]
            generator.set_state(state["generator"])
            start, curves = state["step"], state["curves"]
    trainee.train()
    train_start = time.perf_counter()
    bar = tqdm(range(start, steps), desc=f"pretraining the {config.size} encoder", unit="step", disable=not progress,
               initial=start, total=steps)
    for step in bar:
        world = WORLD_NAMES[step % len(batches)]
        batch = batches[step % len(batches)].draw(rng, generator)
        seen = model.vision_model(pixel_values=batch["pixel_values"], output_hidden_states=True)
        image = torch.nn.functional.normalize(model.visual_projection(seen.pooler_output), dim=-1)
        text = _features(model, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        logits = model.logit_scale.exp().clamp(max=100) * image @ text.t()
        contrastive = multi_positive_loss(logits, batch["positive"])
        attribute = attribute_loss(heads[world](patch_features(seen)), batch["codes"], WORLDS[world])
        loss = contrastive + config.attribute_loss_weight * attribute
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainee.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(loss.item()):
            raise TextonlyError(f"encoder pretraining diverged at step {step}: loss {loss.item()}")
        curves.append({"step": step, "world": world, "loss": round(contrastive.item(), 5),
                       "attribute_loss": round(attribute.item(), 5), "lr": scheduler.get_last_lr()[0]})
        if step % 20 == 0:
            bar.set_postfix(loss=f"{contrastive.item():.3f}", attributes=f"{attribute.item():.3f}")
        if (step + 1) % config.checkpoint_every == 0 and step + 1 < steps:
            _save_checkpoint(checkpoint, trainee, optimizer, scheduler, step + 1, rng, generator, curves, key)
    train_seconds = time.perf_counter() - train_start
    trainee.eval()
    report = evaluate_encoder(model, processor, config, progress=progress)
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "curves.jsonl").write_text(dumps_jsonl(curves), encoding="utf-8")
        (tmp / "report.json").write_text(dumps_json(report), encoding="utf-8")
        (tmp / "encoder_config.json").write_text(dumps_json({
            "fingerprint": key, "config": asdict(config), "steps": steps, "world_seed": world_seed(config.worlds),
            "parameters": {"vision": sum(p.numel() for p in model.vision_model.parameters()),
                           "text": sum(p.numel() for p in model.text_model.parameters()),
                           "total": sum(p.numel() for p in model.parameters())},
            "images": {name: len(b.m.captions) for name, b in zip(WORLD_NAMES, batches)},
            "seconds": {"render": round(render_seconds, 1), "train": round(train_seconds, 1),
                        "total": round(time.perf_counter() - started, 1)},
            "resumed_at_step": start or None, "torch_threads": torch.get_num_threads(),
        }), encoding="utf-8")
        from textonly.cards import write_encoder_card

        write_encoder_card(tmp)
    checkpoint.unlink(missing_ok=True)
    return out


# ---------------------------------------------------------------- what it sees


def _image_features(model, pixels: np.ndarray, batch: int = 250) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Of uint8 NHWC images: the projected, normalised embeddings; the pooled (class token)
    features before the projection; the mean patch features the VLM reads."""
    embeds, pooled, patches = [], [], []
    with torch.no_grad():
        for i in range(0, len(pixels), batch):
            x = _normalise(torch.from_numpy(pixels[i:i + batch]))
            out = model.vision_model(pixel_values=x, output_hidden_states=True)
            pooled.append(out.pooler_output)
            patches.append(patch_features(out))
            embeds.append(torch.nn.functional.normalize(model.visual_projection(out.pooler_output), dim=-1))
    return torch.cat(embeds), torch.cat(pooled), torch.cat(patches)


def _held_out(config: EncoderConfig, world_name: str) -> tuple[np.ndarray, list[dict]]:
    """The world's held-out generic images (``pretrain_eval``) and their attributes, from the attribute questions."""
    from PIL import Image

    root = Path(config.worlds) / world_name / "pretrain_eval"
    by_image: dict[str, dict] = {}
    for r in read_jsonl(root / "annotations.jsonl"):
        if r["question_type"] == 0:
            by_image.setdefault(r["image_path"], {})[r["asks"]] = r["options"][r["answer"]]
    paths = sorted(by_image)
    pixels = []
    for p in paths:
        with Image.open(root / "images" / p) as im:
            pixels.append(np.asarray(im.convert("RGB").resize((config.image_size, config.image_size))))
    return np.stack(pixels), [by_image[p] for p in paths]


def evaluate_encoder(model, processor, config: EncoderConfig, *, progress: bool = True) -> dict:
    """Zero-shot and linear-probe accuracy per attribute on each world's held-out generic images.

    Zero-shot: the one-attribute caption with the highest similarity to the image. Linear
    probes (logistic regressions fitted on ``probe_images`` freshly rendered generic
    individuals, tested on the held-out images): on the pooled image features
    (``linear_probe``) and on the mean patch features that the VLM reads (``patch_probe``).
    """
    from textonly.stats import clustered_bootstrap_ci

    def cell(correct: list[bool]) -> dict:
        acc, low, high = clustered_bootstrap_ci(correct, [str(i) for i in range(len(correct))])
        return {"accuracy": acc, "low": low, "high": high, "n": len(correct)}

    report = {}
    for name in WORLD_NAMES:
        world = WORLDS[name]
        pixels, truth = _held_out(config, name)
        embeds, pooled, patches = _image_features(model, pixels)
        info = json.loads((Path(config.worlds) / name / "world.json").read_text())
        forbidden = {tuple(sorted(s["attributes"].items())) for s in info["species"]}
        prng = _rng(info["settings"]["seed"], name, "encoder-probe", config.seed)
        probe_attrs = []
        while len(probe_attrs) < config.probe_images:
            a = _random_attributes(world, prng)
            if tuple(sorted(a.items())) not in forbidden:
                probe_attrs.append(a)
        probe_pixels = render_images(name, probe_attrs, info["settings"]["seed"], f"encoder-probe-{config.seed}",
                                     config.image_size, progress=progress)
        _, probe_pooled, probe_patches = _image_features(model, probe_pixels)
        parts = {"zero_shot": {}, "linear_probe": {}, "patch_probe": {}}
        for attr in world.attributes:
            captions = [attribute_caption(world, attr.name, v) for v in attr.values]
            tokens = processor.tokenizer(captions, padding=True, return_tensors="pt")
            with torch.no_grad():
                text = _features(model, input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
            predicted = (embeds @ text.t()).argmax(1).tolist()
            parts["zero_shot"][attr.name] = cell([attr.values[p] == t[attr.name] for p, t in zip(predicted, truth)])
            labels = [a[attr.name] for a in probe_attrs]
            for part, fit, held in (("linear_probe", probe_pooled, pooled), ("patch_probe", probe_patches, patches)):
                probe = linear_probe(fit.numpy(), labels)
                parts[part][attr.name] = cell([p == t[attr.name] for p, t in zip(probe.predict(held.numpy()), truth)])
        report[name] = parts
    return report


def linear_probe(features: np.ndarray, labels: list):
    """A logistic-regression probe (scikit-learn) on standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0)).fit(features, labels)
