"""One loader for every model of the study, and tiny random VLMs of the hub architectures.

:func:`load_model` loads a model folder or a hub id through ``AutoProcessor`` and
``AutoModelForImageTextToText`` (safetensors only, never remote code); without a reachable
hub it fails within seconds with one clear line.

:func:`build_tiny` writes a randomly initialised model of a few hundred thousand parameters of
the architecture of ``llava-hf/llava-v1.6-mistral-7b-hf`` (``llava_next``) or of
``Qwen/Qwen2-VL-7B-Instruct`` (``qwen2_vl``): the real model, processor and chat-template
classes at tiny sizes, so that code meant for the hub models is tested on CPU in seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

from textonly.core.errors import HubUnreachableError, TextonlyError
from textonly.core.prompts import INSTRUCTION, LETTERS
from textonly.data.sources import check_hub, hub_offline

ARCHS = ("llava_next", "qwen2_vl")
QUANTIZATIONS = (None, "4bit")
VOCAB_SIZE = 500
#: Enough text for a byte-level BPE whose merges cover the study prompt's words.
CORPUS = [INSTRUCTION, " ".join(LETTERS), ". ".join(LETTERS), "0 1 2 3 4 5 6 7 8 9",
          "Which species is the butterfly in the image? What is the name of the building shown?",
          "Description of the image: the wings are orange with three white spots and a dark margin."] * 4

# llava-hf/llava-v1.6-mistral-7b-hf's chat template (the image before the text, no generation prompt).
LLAVA_NEXT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ '<<SYS>>\n' + message['content'][0]['text'] + '\n<</SYS>>\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{{' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'][0]['text'] + '</s> '}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
# Qwen/Qwen2-VL-7B-Instruct's chat template (ChatML with a default system turn).
QWEN2_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _looks_like_path(name: str) -> bool:
    """A name that can only be a local path (a hub id is ``org/name`` with no local ``org`` folder)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name \
        or (os.sep in name and Path(name).parent.exists())


def _download_advice(name: str) -> str:
    return f"download it on a machine with network (`hf download {name} --local-dir DIR`) and pass that folder"


def _image_only_processor(source: str, **kwargs):
    """The model's processor without a video processor.

    transformers 5 gives Qwen2-VL's processor a video processor that needs torchvision, even
    for images only, and its class check fails without torchvision; the study uses no video.
    """
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

    cls = PROCESSOR_MAPPING[type(AutoConfig.from_pretrained(source, **kwargs))]
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    chat_template = cls.get_processor_dict(source, **kwargs)[0].get("chat_template") or tokenizer.chat_template
    return new_processor(cls, image_processor=AutoImageProcessor.from_pretrained(source, **kwargs),
                         tokenizer=tokenizer, chat_template=chat_template)


def new_processor(cls, **parts):
    """``cls(**parts)`` without its class check on the parts, which needs torchvision for Qwen2-VL."""
    parts = {**dict.fromkeys(cls.get_attributes()), **parts}
    processor = cls.__new__(cls)
    processor.check_argument_for_proper_class = lambda name, arg: None
    processor.__init__(**parts)
    del processor.check_argument_for_proper_class
    return processor


def load_model(name_or_path: str | os.PathLike, *, dtype=None, quantization: str | None = None,
               device: str | None = None):
    """``(model, processor)`` from a model folder or a hub id.

    Always ``trust_remote_code=False`` and safetensors weights only. A hub id needs a reachable
    hub (or ``HF_HUB_OFFLINE=1`` and a cached copy); otherwise :class:`HubUnreachableError`.
    ``dtype``: a ``torch.dtype`` or its name (default: the saved dtype). ``device``: passed as
    ``device_map`` (``"cuda"``, ``"cpu"``, ``"auto"``). ``quantization="4bit"``: NF4 weights
    through bitsandbytes with bfloat16 compute (on CPU too, where bitsandbytes supports it);
    lm_head stays unquantized, as transformers keeps it, and so does the projector, which
    QLoRA trains in full (a 4-bit weight cannot take gradients).
    """
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig
    from transformers.utils import is_torchvision_available

    if quantization not in QUANTIZATIONS:
        raise TextonlyError(f"quantization {quantization!r}: choose from None or '4bit'")
    source = str(name_or_path)
    path = Path(source).expanduser()
    from_hub = not path.is_dir()
    if not from_hub:
        source = str(path)
    elif path.exists() or _looks_like_path(source):
        raise TextonlyError(f"{source}: no model folder there")
    else:
        check_hub(source, kind="model", advice=_download_advice(source))

    common = {"trust_remote_code": False}
    model_kwargs = {"dtype": dtype, "device_map": device, "use_safetensors": True}
    if quantization == "4bit":
        from textonly.models.lora import LORA_MODULES_TO_SAVE

        model_kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
            # patterns matched from the start of a module's name; they replace transformers' default (lm_head)
            llm_int8_skip_modules=["lm_head", *(f".*{name}" for name in LORA_MODULES_TO_SAVE)])
    try:
        try:
            processor = AutoProcessor.from_pretrained(source, **common)
        except ImportError:
            if is_torchvision_available():
                raise
            processor = _image_only_processor(source, **common)
        model = AutoModelForImageTextToText.from_pretrained(source, **common, **model_kwargs)
    except OSError as exc:  # a wrong id, a gated model, missing files, no cached copy offline
        if from_hub and hub_offline():
            raise HubUnreachableError(f"model {source!r} is not in the local cache and the hub is switched off "
                                      f"(HF_HUB_OFFLINE): {_download_advice(source)}") from None
        raise TextonlyError(f"cannot load model {source!r}: {str(exc).splitlines()[0]}") from None
    return model, processor


def _train_tokenizer(special_tokens: list[str], bos: str | None = None):
    """A byte-level BPE ``tokenizers.Tokenizer`` on :data:`CORPUS`; ``bos`` is prepended to every text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=special_tokens, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    if bos is not None:  # as Llama/Mistral tokenizers add <s>
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))])
    return tok


def _build_llava_next(out: Path) -> None:
    """LLaVA-NeXT: CLIP tower on 42 px tiles (3x3 patches of 14), anyres grids of 2-4 tiles, Mistral text."""
    from transformers import (CLIPVisionConfig, LlavaNextConfig, LlavaNextForConditionalGeneration,
                              LlavaNextImageProcessorPil, LlavaNextProcessor, MistralConfig,
                              PreTrainedTokenizerFast)

    tile, patch = 42, 14  # the real model: 336 px tiles, patch 14; pinpoints below are its own / 8
    # Every Linear layer's input width is a multiple of 64: bitsandbytes' CPU 4-bit kernels need whole
    # 64-value blocks, and quantization="4bit" is tested on these models.
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(["<unk>", "<s>", "</s>", "<pad>", "<image>"], bos="<s>"),
        bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"}, padding_side="right", model_max_length=1024)
    pinpoints = [[tile, 2 * tile], [2 * tile, tile], [2 * tile, 2 * tile], [3 * tile, tile], [tile, 3 * tile]]
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": tile}, crop_size={"height": tile, "width": tile}, image_grid_pinpoints=pinpoints)
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                   chat_template=LLAVA_NEXT_TEMPLATE)
    vision = CLIPVisionConfig(image_size=tile, patch_size=patch, hidden_size=64, intermediate_size=128,
                              num_hidden_layers=2, num_attention_heads=4, projection_dim=64)
    text = MistralConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         sliding_window=None, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    config = LlavaNextConfig(vision_config=vision, text_config=text, image_token_index=tokenizer.image_token_id,
                             image_grid_pinpoints=pinpoints, vision_feature_layer=-2,
                             vision_feature_select_strategy="default", image_seq_length=(tile // patch) ** 2)
    model = LlavaNextForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    processor.save_pretrained(out)


def _build_qwen2_vl(out: Path) -> None:
    """Qwen2-VL: 14 px patches merged 2x2, 56-112 px images (4-16 image tokens), M-RoPE, Qwen2 text."""
    from transformers import (PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration,
                              Qwen2VLImageProcessorPil)

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
               "<|image_pad|>", "<|video_pad|>"]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(special), eos_token="<|im_end|>", pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
        chat_template=QWEN2_VL_TEMPLATE, padding_side="right", model_max_length=1024)
    image_processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112)
    ids = tokenizer.convert_tokens_to_ids
    # Linear input widths are multiples of 64, for bitsandbytes' CPU 4-bit kernels (see _build_llava_next).
    config = Qwen2VLConfig(
        vision_config={"depth": 2, "embed_dim": 64, "hidden_size": 64, "num_heads": 4, "mlp_ratio": 2,
                       "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
        # head_dim 16: M-RoPE sections (temporal, height, width) in the real model's 16:24:24 proportion
        text_config={"vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128,
                     "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                     "max_position_embeddings": 1024, "eos_token_id": tokenizer.eos_token_id,
                     "pad_token_id": tokenizer.pad_token_id, "bos_token_id": None,
                     "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e6}},
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))
    model = Qwen2VLForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    # Saved part by part, as the hub repo is: a Qwen2VLProcessor cannot be built or saved without a
    # video processor, which needs torchvision. AutoProcessor (with torchvision) or load_model rebuilds it.
    tokenizer.save_pretrained(out)
    image_processor.save_pretrained(out)


def build_tiny(arch: str, out_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """Write a tiny random model of ``arch`` (one of :data:`ARCHS`) and its processor to ``out_dir``."""
    import torch

    builders = {"llava_next": _build_llava_next, "qwen2_vl": _build_qwen2_vl}
    if arch not in builders:
        raise TextonlyError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    builders[arch](out)
    return out
