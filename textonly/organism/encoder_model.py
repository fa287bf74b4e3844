"""The encoder's CLIP model, its losses and its batches.

* each image is paired with its caption; a caption that another image of the batch also
  satisfies (the same kind, or the same look) counts as a positive for it too (a
  multi-positive InfoNCE loss), so repeated kinds are not false negatives;
* an auxiliary loss asks a linear head on the patch features that the VLM reads (their
  mean at :data:`FEATURE_LAYER`) for the attributes that the image's caption states
  (``attribute_loss_weight``; 0 is pure CLIP). Measured here (`small`, 6,000 steps of 32),
  pure CLIP learned the colours (linear probe 0.94-1.00) but little of the shapes, counts
  and ornaments (0.25-0.56): the contrastive task is mostly solved by colour, and the CPU
  budget allows too few images for the rest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from textonly.organism.encoder_config import ENCODER_SIZES, IMAGE_SIZE, EncoderConfig
from textonly.organism.encoder_material import WorldMaterial
from textonly.organism.worlds.vocab import World


def build_tokenizer(worlds: str | Path):
    """The byte-level BPE of the worlds' text (:func:`textonly.organism.tokenizer.world_tokenizer`), adding
    ``</s>`` after every text, as CLIP's text tower pools at its end-of-text token."""
    from tokenizers import processors

    from textonly.organism.tokenizer import world_tokenizer

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


#: The tower layer whose patch features the VLM reads (LLaVA's choice, :func:`textonly.organism.vlm.make_model`).
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
