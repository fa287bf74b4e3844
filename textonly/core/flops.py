"""The FLOPs of training a VLM on a sample: one exact formula, from the config's dimensions.

Every FLOP figure of the project comes from here: the cost chapter's predictions
(:mod:`textonly.cost.flops`), the measured MFU (:mod:`textonly.cost.measure`), a fine-tuning
run's ``flops`` and the pretraining throughput. It lives in ``core`` because pretraining and
fine-tuning, low in the stages, count with it too.

:func:`training_flops` gives the matrix-multiply FLOPs of one training step on one sample
(batch 1, as the paper's batch 1 x accumulation 32), by part: either LoRA on the language
model's ``q_proj``/``v_proj`` (``lora_r``) or the language model trained in full
(``lora_r=None``, pretraining); the projector trained in full, the vision tower frozen. The
formula (written out in the book's cost chapter):

- a frozen linear layer ``n_in -> n_out`` on ``T`` tokens: ``2 T n_in n_out`` forward and
  the same again backward (the input gradient only; no weight gradient);
- a trained one (LoRA matrices, projector, every layer when trained in full): forward, then
  input and weight gradients;
- attention over ``T`` positions: ``4 T^2 d`` forward (``QK^T`` and ``AV``, dense, as eager
  and SDPA-math kernels compute it), twice that backward;
- under LoRA the first layer of a ``text_only`` sample gets no input gradient where nothing
  before it is trained (its ``k_proj`` and the base ``q_proj``/``v_proj``, and ``dK``);
  trained in full, the embeddings train, so every input gradient is computed;
- the vision tower runs forward only; LLaVA's projector needs no input gradient in its first
  layer (Qwen2-VL's merger starts with a trained LayerNorm, so it does);
- the LM head projects every position (as transformers does when training).

Tests check the formula against ``torch.utils.flop_counter`` on the real model classes.
:func:`batch_flops` applies it to a processed batch, each sample at its own length: the
FLOPs of the samples trained one at a time. Padding, which batching adds, is not counted
(as model FLOPs utilisation does not count it).
"""

from __future__ import annotations

from dataclasses import dataclass

from textonly.core.errors import TextonlyError

#: ``image_text``: a sample with its image; ``text_only``: a sample without one.
COST_MODES = ("image_text", "text_only")
LORA_R = 16  # the paper's LoRA rank (pipeline.train.PRESETS["paper"])


@dataclass(frozen=True)
class LanguageDims:
    """The language model's dimensions that its FLOPs depend on."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int


def language_dims(config) -> LanguageDims:
    """The language model's dimensions from a VLM config (LLaVA, LLaVA-NeXT or Qwen2-VL)."""
    text = config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return LanguageDims(text.hidden_size, text.num_hidden_layers, text.num_attention_heads,
                        text.num_key_value_heads or text.num_attention_heads, head_dim, text.intermediate_size,
                        text.vocab_size)


def _linear(tokens: int, n_in: int, n_out: int) -> int:
    return 2 * tokens * n_in * n_out


def language_flops(dims: LanguageDims, tokens: int, *, lora_r: int | None = LORA_R,
                   first_input_grad: bool = True) -> dict:
    """Forward and backward FLOPs of the language model on one sequence of ``tokens``.

    ``lora_r``: LoRA's rank on ``q_proj``/``v_proj`` (None: every weight trained).
    ``first_input_grad``: whether the first layer's input needs a gradient (something trained
    feeds it: the projector of an ``image_text`` sample, or embeddings trained in full).
    """
    t, d = tokens, dims.hidden
    q_out, kv_out = dims.heads * dims.head_dim, dims.kv_heads * dims.head_dim
    qkv = _linear(t, d, q_out) + 2 * _linear(t, d, kv_out)
    linears = qkv + _linear(t, q_out, d) + 3 * _linear(t, d, dims.intermediate)
    attention = 2 * 2 * t * t * q_out
    head = _linear(t, d, dims.vocab)
    if lora_r is None:  # every linear layer gives input and weight gradients
        forward = dims.layers * (linears + attention) + head
        backward = dims.layers * (2 * linears + 2 * attention) + 2 * head
        if not first_input_grad:  # layer 0's q/k/v input gradients are skipped
            backward -= qkv
        return {"forward": forward, "backward": backward}
    lora_a = 2 * _linear(t, d, lora_r)  # q and v
    lora_b = _linear(t, lora_r, q_out) + _linear(t, lora_r, kv_out)
    forward = dims.layers * (linears + attention + lora_a + lora_b) + head
    # backward: frozen layers give input gradients (x1); attention x2; LoRA B weight + input
    # gradients, LoRA A weight (+ input) gradients; the LM head's input gradient
    backward = dims.layers * (linears + 2 * attention + 2 * lora_b + 2 * lora_a) + head
    if not first_input_grad:  # layer 0's q/k/v base projections, LoRA A input gradient and dK are skipped
        backward -= qkv + lora_a + 2 * t * t * q_out
    return {"forward": forward, "backward": backward}


def vision_flops(config, *, tiles: int = 0, patches: int = 0) -> dict:
    """Forward FLOPs of the frozen vision tower and forward + backward of the trained projector, for one image."""
    if config.model_type in ("llava", "llava_next"):  # LLaVA (the embedded models): one tile per image
        v = config.vision_config
        n = (v.image_size // v.patch_size) ** 2  # patches per tile
        s = n + 1  # with the class token
        embed = _linear(n, 3 * v.patch_size ** 2, v.hidden_size)
        layer = 4 * _linear(s, v.hidden_size, v.hidden_size) + 2 * 2 * s * s * v.hidden_size \
            + 2 * _linear(s, v.hidden_size, v.intermediate_size)
        # every CLIP layer runs, also when the features are taken from the second-to-last one
        tower = tiles * (embed + v.num_hidden_layers * layer)
        features = n if config.vision_feature_select_strategy == "default" else s
        first = _linear(features, v.hidden_size, config.text_config.hidden_size)
        second = _linear(features, config.text_config.hidden_size, config.text_config.hidden_size)
        return {"vision_tower": tower, "projector_forward": tiles * (first + second),
                "projector_backward": tiles * (first + 2 * second)}
    if config.model_type == "qwen2_vl":
        v = config.vision_config
        d, n = v.embed_dim, patches
        embed = _linear(n, v.in_channels * v.temporal_patch_size * v.patch_size ** 2, d)
        layer = _linear(n, d, 3 * d) + _linear(n, d, d) + 2 * 2 * n * n * d + 2 * _linear(n, d, d * v.mlp_ratio)
        tower = embed + v.depth * layer
        merged, width = n // v.spatial_merge_size ** 2, d * v.spatial_merge_size ** 2
        first = _linear(merged, width, width)
        second = _linear(merged, width, v.hidden_size)
        # the merger's trained LayerNorm comes first, so its first linear also gives an input gradient
        return {"vision_tower": tower, "projector_forward": first + second,
                "projector_backward": 2 * (first + second)}
    raise TextonlyError(f"no FLOP formula for model type {config.model_type!r}")


def sample_length(row: dict, mode: str) -> int:
    """Tokens of a row's training sample in ``mode``: question and image, or question and description."""
    return row["text_only_tokens"] if mode == "text_only" else row["text_tokens"] + row["image_tokens"]


def training_flops(config, row: dict, mode: str, *, lora_r: int | None = LORA_R) -> dict:
    """FLOPs of one training step on one sample, by part (and their ``total``).

    ``row``: ``text_tokens``/``image_tokens`` and ``vision_tiles`` (LLaVA, LLaVA-NeXT) or
    ``vision_patches`` (Qwen2-VL) of an ``image_text`` sample, ``text_only_tokens`` of a
    ``text_only`` one (:func:`textonly.cost.flops.sample_tokens` makes such rows).
    ``lora_r``: LoRA's rank (None: the language model trained in full).
    """
    if mode not in COST_MODES:
        raise TextonlyError(f"mode {mode!r}: choose from {', '.join(COST_MODES)}")
    dims = language_dims(config)
    first_input_grad = mode == "image_text" or lora_r is None
    lm = language_flops(dims, sample_length(row, mode), lora_r=lora_r, first_input_grad=first_input_grad)
    if mode == "text_only":
        parts = {"vision_tower": 0, "projector": 0}
    else:
        v = vision_flops(config, tiles=row.get("vision_tiles", 0), patches=row.get("vision_patches", 0))
        parts = {"vision_tower": v["vision_tower"], "projector": v["projector_forward"] + v["projector_backward"]}
    parts.update(language_forward=lm["forward"], language_backward=lm["backward"])
    parts["total"] = sum(parts.values())
    return parts


def _image_token_id(config) -> int:
    token = getattr(config, "image_token_id", None)
    return token if token is not None else config.image_token_index


def _vision_work(config, batch: dict) -> list[dict]:
    """Per image of a processed batch, in order: the tiles (LLaVA) or patches (Qwen2-VL) the tower encodes."""
    if "pixel_values" not in batch:
        return []
    if config.model_type == "qwen2_vl":
        return [{"vision_patches": int(thw.prod())} for thw in batch["image_grid_thw"]]
    if config.model_type == "llava_next":  # the tiles the model itself splits off, by its own config
        from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

        return [{"vision_tiles": int(image_size_to_num_patches(size.tolist(), config.image_grid_pinpoints,
                                                                config.vision_config.image_size))}
                for size in batch["image_sizes"]]
    return [{"vision_tiles": 1} for _ in range(batch["pixel_values"].shape[0])]


def batch_samples(config, batch: dict) -> list[tuple[dict, str]]:
    """Each sample of a processed batch (``input_ids``, ``attention_mask``, the image inputs) as a
    row of :func:`training_flops` and its mode; a sample holds at most one image."""
    real = batch["attention_mask"].bool()
    image_tokens = ((batch["input_ids"] == _image_token_id(config)) & real).sum(-1).tolist()
    lengths = real.sum(-1).tolist()
    images = iter(_vision_work(config, batch))
    out = []
    for length, n_image in zip(lengths, image_tokens):
        if not n_image:
            out.append(({"text_only_tokens": int(length)}, "text_only"))
            continue
        work = next(images, None)
        if work is None:
            raise TextonlyError("a batch has more samples with image tokens than images")
        out.append(({"text_tokens": int(length - n_image), "image_tokens": int(n_image), **work}, "image_text"))
    if next(images, None) is not None:
        raise TextonlyError("a batch has more images than samples with image tokens (one image per sample)")
    return out


def batch_flops(config, batch: dict, *, lora_r: int | None = LORA_R) -> int:
    """Training FLOPs of a processed batch: :func:`training_flops` of each sample at its own length."""
    return sum(training_flops(config, row, mode, lora_r=lora_r)["total"] for row, mode in batch_samples(config, batch))
