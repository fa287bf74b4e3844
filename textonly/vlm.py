"""The embedded base VLMs: LLaVA architecture (CLIP-style vision tower + Llama text model).

Built from configs at three sizes, with a tokenizer trained on the worlds' text (chat
template and ``<image>`` token included), a ``CLIPImageProcessorPil`` and a
``LlavaProcessor``. Saved with ``save_pretrained``, they load through ``AutoProcessor``
and ``AutoModelForImageTextToText`` exactly as a hub model does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from textonly.errors import TextonlyError

IMAGE_TOKEN = "<image>"
#: The role markers are single tokens, spaces included: the answer letter after
#: ``ASSISTANT: `` is then the very token that labels its option line ("\nB. red"), and no
#: letter token hides inside a marker (byte-level BPE spelled "ASSISTANT" with " A" and "A").
USER, ASSISTANT = "USER: ", " ASSISTANT: "
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", IMAGE_TOKEN, USER, ASSISTANT]
#: LoRA goes on the language model only (a bare name list would also hit the vision tower).
LORA_TARGET = r".*language_model.*\.(q_proj|v_proj)"
#: Trained in full next to the LoRA adapters, as the paper trains the projector
#: (LLaVA: ``multi_modal_projector``; Qwen2-VL: ``visual.merger``).
LORA_MODULES_TO_SAVE = ["multi_modal_projector", "merger"]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% elif message['role'] == 'assistant' %} ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %} ASSISTANT: {% endif %}"
)


@dataclass(frozen=True)
class ModelSize:
    """Widths and depths of the vision tower and the text model."""

    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_mlp: int
    text_hidden: int
    text_layers: int
    text_heads: int
    text_mlp: int


MODEL_SIZES = {
    "tiny": ModelSize(96, 2, 4, 256, 128, 2, 4, 384),  # about 1M parameters: tests, CI smoke runs
    "small": ModelSize(128, 4, 4, 512, 256, 4, 8, 704),  # about 5M: the study's default
    "base": ModelSize(256, 6, 8, 1024, 384, 8, 8, 1024),  # about 20M
}
IMAGE_SIZE = 64
PATCH_SIZE = 8


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048):
    """A byte-level BPE tokenizer trained on ``texts``, with the chat template and image token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        extra_special_tokens={"image_token": IMAGE_TOKEN}, chat_template=CHAT_TEMPLATE,
        padding_side="right", model_max_length=512,
    )


def make_processor(tokenizer, image_size: int = IMAGE_SIZE, patch_size: int = PATCH_SIZE):
    """A ``LlavaProcessor``: resize the short side, centre-crop, normalise; one token per patch."""
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=CHAT_TEMPLATE)


def make_model(size: str, tokenizer, image_size: int = IMAGE_SIZE, patch_size: int = PATCH_SIZE, seed: int = 0):
    """A randomly initialised ``LlavaForConditionalGeneration`` of the given size."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    if size not in MODEL_SIZES:
        raise TextonlyError(f"unknown size {size!r}; choose from {', '.join(MODEL_SIZES)}")
    s = MODEL_SIZES[size]
    vision = CLIPVisionConfig(image_size=image_size, patch_size=patch_size, hidden_size=s.vision_hidden,
                              intermediate_size=s.vision_mlp, num_hidden_layers=s.vision_layers,
                              num_attention_heads=s.vision_heads, projection_dim=s.vision_hidden)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=s.text_hidden, intermediate_size=s.text_mlp,
                       num_hidden_layers=s.text_layers, num_attention_heads=s.text_heads,
                       num_key_value_heads=s.text_heads, max_position_embeddings=512, tie_word_embeddings=True,
                       pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tokenizer.image_token_id,
                         vision_feature_layer=-1, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu", image_seq_length=(image_size // patch_size) ** 2,
                         tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
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


def lora_config(r: int = 8, alpha: int = 16, dropout: float = 0.0):
    """LoRA on the language model's attention (q, v) and the projector trained in full."""
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=LORA_TARGET,
                      modules_to_save=LORA_MODULES_TO_SAVE, task_type="CAUSAL_LM")

