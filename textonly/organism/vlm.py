"""The embedded base VLMs: LLaVA architecture (the CLIP vision tower of :mod:`textonly.organism.encoder`
+ a Llama text model).

Built from configs at three sizes, with the tokenizer of :mod:`textonly.organism.tokenizer` (chat
template and ``<image>`` token included), a ``CLIPImageProcessorPil`` and a
``LlavaProcessor``. Saved with ``save_pretrained``, they load through ``AutoProcessor``
and ``AutoModelForImageTextToText`` exactly as a hub model does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textonly.core.errors import TextonlyError
from textonly.organism.tokenizer import CHAT_TEMPLATE


@dataclass(frozen=True)
class ModelSize:
    """Widths and depths of the text model (the vision tower is the encoder's of the same size)."""

    text_hidden: int
    text_layers: int
    text_heads: int
    text_mlp: int


MODEL_SIZES = {
    "tiny": ModelSize(128, 2, 4, 384),  # tests, CI smoke runs
    "small": ModelSize(256, 4, 8, 704),  # the study's default
    "base": ModelSize(384, 8, 8, 1024),
}
def make_processor(tokenizer, image_size: int = 64, patch_size: int = 8):
    """A ``LlavaProcessor``: the encoder's image processing, then one token per patch."""
    from transformers import LlavaProcessor

    from textonly.organism.encoder_model import make_image_processor

    return LlavaProcessor(image_processor=make_image_processor(image_size), tokenizer=tokenizer,
                          patch_size=patch_size, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE)


def make_model(size: str, tokenizer, vision=None, seed: int = 0):
    """A ``LlavaForConditionalGeneration`` of the given size, its language model and projector random.

    ``vision``: a pretrained ``CLIPModel`` (or its folder) whose vision tower the VLM takes;
    ``None`` makes a random tower of the encoder's size for ``size`` (tests).
    """
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from textonly.organism.encoder_config import ENCODER_SIZES, IMAGE_SIZE, PATCH_SIZE

    if size not in MODEL_SIZES:
        raise TextonlyError(f"unknown size {size!r}; choose from {', '.join(MODEL_SIZES)}")
    if isinstance(vision, (str, Path)):
        from transformers import CLIPModel

        vision = CLIPModel.from_pretrained(vision)
    if vision is not None:
        vision_config = vision.config.vision_config
    else:
        e = ENCODER_SIZES[size]
        vision_config = CLIPVisionConfig(image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, hidden_size=e.vision_hidden,
                                         intermediate_size=4 * e.vision_hidden, num_hidden_layers=e.vision_layers,
                                         num_attention_heads=e.vision_heads, projection_dim=e.projection)
    s = MODEL_SIZES[size]
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=s.text_hidden, intermediate_size=s.text_mlp,
                       num_hidden_layers=s.text_layers, num_attention_heads=s.text_heads,
                       num_key_value_heads=s.text_heads, max_position_embeddings=512, tie_word_embeddings=True,
                       pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id)
    grid = vision_config.image_size // vision_config.patch_size
    # LLaVA's choice: the patch features of the second-to-last layer. The tower's losses reach
    # the last layer only through its class token, so its patch outputs are trained by nothing
    config = LlavaConfig(vision_config=vision_config, text_config=text, image_token_id=tokenizer.image_token_id,
                         vision_feature_layer=-2, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu", image_seq_length=grid * grid, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    if vision is not None:
        model.model.vision_tower.load_state_dict(vision.vision_model.state_dict())
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def size_summary(model) -> dict:
    """Parameter counts of the whole model and of its parts."""
    parts = {"vision_tower": 0, "multi_modal_projector": 0, "language_model": 0}
    for name, p in model.named_parameters():
        for part in parts:
            if f".{part}." in f".{name}":
                parts[part] += p.numel()
    return {"total": sum(p.numel() for p in model.parameters()), **parts}
