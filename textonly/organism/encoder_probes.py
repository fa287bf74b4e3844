"""What the encoder sees, for its card: on the worlds' held-out generic images
(``pretrain_eval``), the zero-shot accuracy per attribute (the one-attribute caption closest
to the image) and linear probes' accuracy on its image features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from textonly.core.fileio import read_jsonl
from textonly.organism.encoder_config import WORLD_NAMES, EncoderConfig
from textonly.organism.encoder_material import attribute_caption, render_images
from textonly.organism.encoder_model import _features, _normalise, patch_features
from textonly.organism.worlds.species import _random_attributes, _rng
from textonly.organism.worlds.vocab import WORLDS


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
    from textonly.data.images import load_image
    from textonly.data.layout import IMAGES

    root = Path(config.worlds) / world_name / "pretrain_eval"
    by_image: dict[str, dict] = {}
    for r in read_jsonl(root / "annotations.jsonl"):
        if r["question_type"] == 0:
            by_image.setdefault(r["image_path"], {})[r["asks"]] = r["options"][r["answer"]]
    paths = sorted(by_image)
    pixels = []
    for p in paths:
        image = load_image(root / IMAGES, p)
        pixels.append(np.asarray(image.resize((config.image_size, config.image_size))))
    return np.stack(pixels), [by_image[p] for p in paths]


def evaluate_encoder(model, processor, config: EncoderConfig, *, progress: bool = True) -> dict:
    """Zero-shot and linear-probe accuracy per attribute on each world's held-out generic images.

    Zero-shot: the one-attribute caption with the highest similarity to the image. Linear
    probes (logistic regressions fitted on ``probe_images`` freshly rendered generic
    individuals, tested on the held-out images): on the pooled image features
    (``linear_probe``) and on the mean patch features that the VLM reads (``patch_probe``).
    """
    from textonly.core.stats import clustered_bootstrap_ci

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
