"""The CLIP encoder's material and loss: look-alike families of generic individuals, no target ever
rendered, multi-positive targets that match what each caption says, the loss on known cases."""


import json
import math

import numpy as np
import pytest
import torch

from textonly.organism.encoder_config import EncoderConfig
from textonly.organism.encoder_material import _family, attribute_caption, encoder_material
from textonly.organism.encoder_model import multi_positive_loss, positives
from textonly.organism.worlds.species import _rng
from textonly.organism.worlds.vocab import WORLDS


def test_loss_is_log_n_at_chance_and_counts_every_positive():
    n = 4
    uniform = torch.zeros(n, n)
    assert multi_positive_loss(uniform, torch.eye(n, dtype=torch.bool)).item() == pytest.approx(math.log(n))
    # two positives each: the loss is -log(2/4)
    both = torch.eye(n, dtype=torch.bool) | torch.eye(n, dtype=torch.bool).roll(1, 0)
    assert multi_positive_loss(uniform, both | both.t()).item() == pytest.approx(-math.log(3 / 4))
    confident = torch.eye(n) * 50
    assert multi_positive_loss(confident, torch.eye(n, dtype=torch.bool)).item() < 1e-6


@pytest.mark.parametrize("world", ["wings", "heritage"])
def test_families_differ_in_one_attribute_and_are_no_named_kind(world, worlds):
    info = json.loads((worlds / world / "world.json").read_text())
    forbidden = {tuple(sorted(s["attributes"].items())) for s in info["species"]}
    rng = _rng(0, world, "test")
    for _ in range(50):
        family = _family(WORLDS[world], rng, 4, forbidden)
        assert len(family) == 4 and len({tuple(sorted(a.items())) for a in family}) == 4
        assert not {tuple(sorted(a.items())) for a in family} & forbidden
        base = family[0]
        assert all(sum(a[k] != base[k] for k in base) == 1 for a in family[1:])


@pytest.mark.parametrize("world", ["wings", "heritage"])
def test_encoder_material_shows_no_target(world, worlds):
    config = EncoderConfig(size="tiny", worlds=str(worlds), images_per_world=40, images_per_kind=1)
    material = encoder_material(config, world, progress=False)
    info = json.loads((worlds / world / "world.json").read_text())
    targets = [s for s in info["species"] if s["role"] == "target"]
    target_looks = {tuple(sorted(s["attributes"].items())) for s in targets}
    assert not {tuple(sorted(a.items())) for a in material.attributes} & target_looks
    assert not {n for n in material.names if n} & {s["name"] for s in targets}
    assert material.pixels.shape == (len(material.attributes), 64, 64, 3)
    again = encoder_material(config, world, progress=False)
    assert np.array_equal(again.pixels, material.pixels)  # the same seed renders the same images


def test_positives_are_what_each_caption_says():
    # images 0 and 1 look the same (1 is the named kind 7); 2 differs from them in attribute 1 only
    codes = torch.tensor([[0, 0, 1], [0, 0, 1], [0, 3, 1]])
    names = torch.tensor([0, 7, 0])
    assert positives(codes, names).tolist() == [[True, False, False],  # 0 is not the kind caption 1 names
                                                [True, True, False],  # the kind satisfies its generic look
                                                [False, False, True]]
    assert attribute_caption(WORLDS["wings"], "wing_shape", "tailed") == "A butterfly. Its wings are tailed."
