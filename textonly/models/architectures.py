"""The paper's 7B VLMs, rebuilt offline from their published dimensions.

Compute does not depend on the values of the weights, so the cost of text-only training
can be measured on the real architectures with random weights. This module holds, for each
of :data:`ARCHITECTURES`, the published sizes (the hub checkpoint's ``config.json``), the
image-processor settings (its ``preprocessor_config.json``) and chat template, and builds:

* :func:`config`: the full-size transformers config (``layers=`` shortens the language
  model and vision tower, for tests and CPU runs);
* :func:`processor`: the real processor class with the published image settings and a real
  vocabulary taken from a package on the registry (no hub): Mistral's v1 SentencePiece model
  from ``mistral-common``, Qwen's BPE ranks from Alibaba's ``dashscope``. The Llama 2
  vocabulary of the vicuna variant is on no registry; its stand-in is Mistral's (the same
  algorithm and size, 32,000 pieces), named in :attr:`Architecture.tokenizer_source`;
* :func:`model`: the model with random weights (``device="meta"`` allocates nothing).

With network, ``hub.load_model(Architecture.hub_id)`` gives the real checkpoint instead.
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from textonly.core.errors import TextonlyError
from textonly.models.hub import LLAVA_NEXT_TEMPLATE, QWEN2_VL_TEMPLATE

#: llava-hf/llava-v1.6-vicuna-7b-hf's chat template (vicuna v1 roles; the image before the text).
LLAVA_VICUNA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% if message['role'] != 'assistant' %}{{ content['text'] + ' '}}{% else %}{{ content['text'] + '</s> '}}"
    "{% endif %}{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

#: LLaVA-1.6's anyres grids (height, width) in pixels: 336 px tiles, 1x2, 2x1, 2x2, 1x3, 3x1.
LLAVA_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
#: Qwen2-VL's pixel bounds (preprocessor_config.json): 4 to 16,384 merged tokens of 28x28 px.
QWEN2_VL_MIN_PIXELS = 56 * 56
QWEN2_VL_MAX_PIXELS = 28 * 28 * 16384
#: Qwen2-VL's pre-tokenizer (the same as Qwen's): single digits, byte-level BPE.
QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
#: Qwen2-VL's special tokens in id order from 151,643 (after the 151,643 BPE tokens).
QWEN2_VL_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]

CLIP_L_336 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                  image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu")


@dataclass(frozen=True)
class Architecture:
    """One of the paper's VLMs: where it is published and what it is made of."""

    name: str
    hub_id: str
    family: str  # "llava_next" or "qwen2_vl"
    text: dict  # the language model's config values
    vision: dict  # the vision tower's config values
    tokenizer_source: str
    extra: dict = field(default_factory=dict)  # the top-level config values


ARCHITECTURES = {
    "llava-v1.6-vicuna-7b": Architecture(
        name="llava-v1.6-vicuna-7b", hub_id="llava-hf/llava-v1.6-vicuna-7b-hf", family="llava_next",
        text=dict(model_type="llama", vocab_size=32064, hidden_size=4096, intermediate_size=11008,
                  num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                  max_position_embeddings=4096, rms_norm_eps=1e-5, pad_token_id=0),
        vision=CLIP_L_336,
        tokenizer_source="stand-in: Mistral v1 SentencePiece (mistral-common tokenizer.model.v1); "
                         "the Llama 2 vocabulary (also 32,000 pieces) is on no package registry",
        extra=dict(image_token_index=32000, vision_feature_layer=-2, vision_feature_select_strategy="default",
                   image_grid_pinpoints=LLAVA_PINPOINTS, projector_hidden_act="gelu", image_seq_length=576)),
    "llava-v1.6-mistral-7b": Architecture(
        name="llava-v1.6-mistral-7b", hub_id="llava-hf/llava-v1.6-mistral-7b-hf", family="llava_next",
        text=dict(model_type="mistral", vocab_size=32064, hidden_size=4096, intermediate_size=14336,
                  num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                  max_position_embeddings=32768, rms_norm_eps=1e-5, rope_theta=1e6, sliding_window=None),
        vision=CLIP_L_336,
        tokenizer_source="Mistral v1 SentencePiece (mistral-common tokenizer.model.v1), as Mistral-7B-Instruct-v0.2",
        extra=dict(image_token_index=32000, vision_feature_layer=-2, vision_feature_select_strategy="default",
                   image_grid_pinpoints=LLAVA_PINPOINTS, projector_hidden_act="gelu", image_seq_length=576)),
    "qwen2-vl-7b": Architecture(
        name="qwen2-vl-7b", hub_id="Qwen/Qwen2-VL-7B-Instruct", family="qwen2_vl",
        text=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                  num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768,
                  rms_norm_eps=1e-6, tie_word_embeddings=False, bos_token_id=151643, eos_token_id=151645,
                  rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1e6}),
        vision=dict(depth=32, embed_dim=1280, mlp_ratio=4, num_heads=16, in_channels=3, hidden_size=3584,
                    patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        tokenizer_source="Qwen BPE ranks (dashscope resources/qwen.tiktoken, 151,643 tokens, shared by Qwen2) "
                         "plus Qwen2-VL's special tokens",
        extra=dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                   vision_end_token_id=151653)),
}


def get(name: str) -> Architecture:
    """The architecture called ``name`` (a key of :data:`ARCHITECTURES`)."""
    if name not in ARCHITECTURES:
        raise TextonlyError(f"unknown architecture {name!r}; choose from {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def config(name: str, *, layers: int | None = None, vision_layers: int | None = None):
    """The transformers config of ``name`` at full size, or with fewer layers (``layers``/``vision_layers``)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig, MistralConfig, Qwen2VLConfig

    arch = get(name)
    text, vision = dict(arch.text), dict(arch.vision)
    if layers is not None:
        text["num_hidden_layers"] = layers
    if arch.family == "llava_next":
        if vision_layers is not None:
            vision["num_hidden_layers"] = vision_layers
        text_cls = {"llama": LlamaConfig, "mistral": MistralConfig}[text.pop("model_type")]
        return LlavaNextConfig(vision_config=CLIPVisionConfig(**vision), text_config=text_cls(**text), **arch.extra)
    if vision_layers is not None:
        vision["depth"] = vision_layers
    return Qwen2VLConfig(vision_config=vision, text_config=text, **arch.extra)


#: A folder holding ``tokenizer.model.v1`` and ``qwen.tiktoken`` to use instead of the packages'
#: copies (for a machine without those packages, such as a GPU machine with no network).
VOCAB_DIR_ENV = "TEXTONLY_VOCAB_DIR"


def _vocabulary(package: str, *parts: str):
    """A vocabulary file: from ``$TEXTONLY_VOCAB_DIR`` when set, else from inside ``package``."""
    folder = os.environ.get(VOCAB_DIR_ENV)
    if folder:
        path = Path(folder) / parts[-1]
        if not path.is_file():
            raise TextonlyError(f"${VOCAB_DIR_ENV}={folder}: no {parts[-1]} there")
        return path
    return importlib.resources.files(package).joinpath(*parts)


@lru_cache(maxsize=None)
def _spm_tokenizer():
    """Mistral's v1 SentencePiece model as a fast tokenizer (transformers converts it from a folder)."""
    from transformers import LlamaTokenizer

    source = _vocabulary("mistral_common", "data", "tokenizer.model.v1")
    with tempfile.TemporaryDirectory() as folder:
        with importlib.resources.as_file(source) as path:
            shutil.copy(path, os.path.join(folder, "tokenizer.model"))
        return LlamaTokenizer.from_pretrained(folder, legacy=False)


@lru_cache(maxsize=None)
def _qwen_tokenizer_object():
    from transformers.convert_slow_tokenizer import TikTokenConverter

    source = _vocabulary("dashscope", "resources", "qwen.tiktoken")
    with importlib.resources.as_file(source) as path:
        return TikTokenConverter(vocab_file=str(path), pattern=QWEN_PATTERN,
                                 extra_special_tokens=QWEN2_VL_SPECIAL).converted()


def tokenizer(name: str):
    """The tokenizer of ``name`` built from a registry package's vocabulary (see :attr:`Architecture.tokenizer_source`)."""
    import copy

    from transformers import PreTrainedTokenizerFast

    arch = get(name)
    try:
        if arch.family == "llava_next":
            from tokenizers import AddedToken

            tok = copy.deepcopy(_spm_tokenizer())
            # llava-hf adds <image> (id 32000) to the 32,000 pieces; mistral also <pad> (32001),
            # vicuna pads with <unk> (id 0)
            mistral = arch.text["model_type"] == "mistral"
            extra = ["<image>", "<pad>"] if mistral else ["<image>"]
            tok.add_tokens([AddedToken(t, special=True) for t in extra], special_tokens=True)
            tok.pad_token = "<pad>" if mistral else tok.unk_token
            tok.image_token = "<image>"
            tok.image_token_id = tok.convert_tokens_to_ids("<image>")
            tok.padding_side = "right"
            return tok
        return PreTrainedTokenizerFast(
            tokenizer_object=copy.deepcopy(_qwen_tokenizer_object()), eos_token="<|im_end|>",
            pad_token="<|endoftext|>", extra_special_tokens={"image_token": "<|image_pad|>",
                                                            "video_token": "<|video_pad|>"},
            padding_side="right", model_max_length=32768)
    except ModuleNotFoundError as exc:
        raise TextonlyError(f"the vocabulary of {name} comes from the package {exc.name!r}: pip install it "
                            "(it is in the project's dependencies)") from None


def processor(name: str, *, min_pixels: int | None = None, max_pixels: int | None = None,
              pinpoints: list[list[int]] | None = None):
    """The processor of ``name`` with its published image settings, built offline.

    ``min_pixels``/``max_pixels`` (Qwen2-VL) and ``pinpoints`` (LLaVA-NeXT's anyres grids)
    override the published resolution settings, to see how the cost depends on them.
    """
    from transformers import LlavaNextImageProcessorPil, LlavaNextProcessor, Qwen2VLImageProcessorPil, \
        Qwen2VLProcessor

    from textonly.models.hub import new_processor

    arch = get(name)
    tok = tokenizer(name)
    if arch.family == "llava_next":
        grid = pinpoints or LLAVA_PINPOINTS
        images = LlavaNextImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                            image_grid_pinpoints=grid, do_pad=True)
        template = LLAVA_VICUNA_TEMPLATE if arch.text["model_type"] == "llama" else LLAVA_NEXT_TEMPLATE
        return LlavaNextProcessor(image_processor=images, tokenizer=tok, patch_size=14,
                                  vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                  chat_template=template)
    images = Qwen2VLImageProcessorPil(min_pixels=min_pixels or QWEN2_VL_MIN_PIXELS,
                                      max_pixels=max_pixels or QWEN2_VL_MAX_PIXELS,
                                      patch_size=14, merge_size=2, temporal_patch_size=2)
    return new_processor(Qwen2VLProcessor, image_processor=images, tokenizer=tok, chat_template=QWEN2_VL_TEMPLATE)


def model(name: str, *, layers: int | None = None, vision_layers: int | None = None, dtype=None,
          device: str | None = None, attn_implementation: str = "sdpa"):
    """The model of ``name`` with random weights (``device="meta"``: shapes only, nothing allocated)."""
    import torch
    from transformers import AutoModelForImageTextToText

    cfg = config(name, layers=layers, vision_layers=vision_layers)
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    with torch.device(device or "cpu"):
        return AutoModelForImageTextToText.from_config(cfg, dtype=dtype or torch.float32,
                                                       attn_implementation=attn_implementation)
