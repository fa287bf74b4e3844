"""What determines the organism's vision encoder (:mod:`textonly.organism.encoder`): the sizes
of its CLIP towers, its settings (their hash names the build) and where it lives: one encoder
per world seed and size."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from textonly.core.errors import TextonlyError

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
