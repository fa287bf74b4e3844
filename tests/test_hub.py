"""Tiny random VLMs of the hub architectures (LLaVA-NeXT, Qwen2-VL) through the study's loader:
save -> reload, same seed same weights, letter scoring and greedy generation batched = one by
one (with and without images), LoRA on the language model only, 4-bit loading, and failing
fast without a hub."""

import time

import pytest
import torch

from conftest import good_record, make_dataset, write_image
from textonly.models.lora import lora_config

from textonly.core.errors import HubUnreachableError, TextonlyError
from textonly.models.scoring import generate_answers, score_letters
from textonly.models.hub import ARCHS, build_tiny, load_model
from textonly.core.prompts import mcq_messages

CLASSES = {"llava_next": "LlavaNextForConditionalGeneration", "qwen2_vl": "Qwen2VLForConditionalGeneration"}
PROCESSORS = {"llava_next": "LlavaNextProcessor", "qwen2_vl": "Qwen2VLProcessor"}
# Sizes and aspect ratios that pick different anyres grids / Qwen2-VL patch grids.
IMAGE_SIZES = [(64, 64), (96, 48), (40, 80), (120, 90), (50, 50), (64, 128)]


@pytest.fixture(scope="module")
def questions(tmp_path_factory):
    """Six questions whose prompts and images differ in length, so that a batch needs padding."""
    root = tmp_path_factory.mktemp("questions")
    records = [good_record(i, question="Which one is shown?" + " Look at the wings." * i,
                           options=[" ".join(["orange"] * (1 + (i + j) % 3)) for j in range(4)])
               for i in range(len(IMAGE_SIZES))]
    make_dataset(root, records, images=False)
    for i, (r, size) in enumerate(zip(records, IMAGE_SIZES)):
        write_image(root / "images" / r["image_path"], size=size, colour=(40 * i, 200 - 30 * i, 90))
    return root, records


@pytest.fixture(scope="module", params=ARCHS)
def tiny(request, tmp_path_factory):
    """``(arch, folder)``: a tiny model of each architecture, built once."""
    return request.param, build_tiny(request.param, tmp_path_factory.mktemp(request.param), seed=0)


def _image(root, record):
    from PIL import Image

    with Image.open(root / "images" / record["image_path"]) as image:
        return image.convert("RGB")


def test_saved_folder_loads_as_the_real_architecture(tiny, questions):
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.utils import is_torchvision_available

    arch, folder = tiny
    model, processor = load_model(folder)
    assert type(model).__name__ == CLASSES[arch] and type(processor).__name__ == PROCESSORS[arch]
    assert type(AutoModelForImageTextToText.from_pretrained(folder)).__name__ == CLASSES[arch]
    if arch != "qwen2_vl" or is_torchvision_available():  # transformers 5's Qwen2-VL processor needs torchvision
        assert type(AutoProcessor.from_pretrained(folder)).__name__ == PROCESSORS[arch]
    assert sum(p.numel() for p in model.parameters()) < 1e6
    root, records = questions
    prompt = processor.apply_chat_template(mcq_messages(records[0]), add_generation_prompt=True)
    for record in records:
        inputs = processor(text=[prompt], images=[_image(root, record)], return_tensors="pt")
        n_image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
        assert 4 <= n_image_tokens <= 64


def test_same_seed_same_weights(tiny, tmp_path):
    arch, folder = tiny
    again = build_tiny(arch, tmp_path / "again", seed=0)
    assert (again / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()
    assert (again / "tokenizer.json").read_bytes() == (folder / "tokenizer.json").read_bytes()
    other = build_tiny(arch, tmp_path / "other", seed=1)
    assert (other / "model.safetensors").read_bytes() != (folder / "model.safetensors").read_bytes()


@pytest.mark.parametrize("condition", ["image", "no_image"])
def test_batched_scores_equal_one_by_one(tiny, questions, condition):
    _, folder = tiny
    model, processor = load_model(folder)
    root, records = questions
    batched = score_letters(model, processor, records, root, condition=condition, batch_size=len(records),
                            progress=False)
    single = score_letters(model, processor, records, root, condition=condition, batch_size=1, progress=False)
    scores = torch.tensor([p["scores"] for p in batched])
    assert [p["id_"] for p in batched] == [r["id_"] for r in records]
    assert scores.shape == (len(records), 4) and torch.isfinite(scores).all()
    assert torch.allclose(scores, torch.tensor([p["scores"] for p in single]), atol=1e-4)


def test_greedy_generation_takes_the_most_likely_token_each_step(tiny, questions):
    """``generate`` (with its key/value cache) equals decoding by hand: the argmax of the full
    sequence's next-token logits, appended three times."""
    _, folder = tiny
    model, processor = load_model(folder)
    root, records = questions
    prompt = processor.apply_chat_template(mcq_messages(records[1]), add_generation_prompt=True)
    inputs = processor(text=[prompt], images=[_image(root, records[1])], return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=3, do_sample=False, min_new_tokens=3)
    ids, extra = inputs["input_ids"], {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    for _ in range(3):
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), **extra).logits[:, -1]
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], 1)
        if "mm_token_type_ids" in extra:  # the appended token is text
            kinds = extra["mm_token_type_ids"]
            extra["mm_token_type_ids"] = torch.cat([kinds, torch.zeros_like(kinds[:, :1])], 1)
    assert torch.equal(generated, ids)


@pytest.mark.parametrize("condition", ["image", "no_image"])
def test_batched_generation_equals_one_by_one(tiny, questions, condition):
    """``generate_answers`` pads on the left: the text positions (M-RoPE in Qwen2-VL) must not shift."""
    _, folder = tiny
    model, processor = load_model(folder)
    root, records = questions
    batched = generate_answers(model, processor, records, root, condition=condition, batch_size=len(records),
                               max_new_tokens=3, progress=False)
    single = generate_answers(model, processor, records, root, condition=condition, batch_size=1,
                              max_new_tokens=3, progress=False)
    assert [p["output"] for p in batched] == [p["output"] for p in single]


def test_lora_attaches_to_the_language_model_only(tiny):
    from peft import get_peft_model

    _, folder = tiny
    model = get_peft_model(load_model(folder)[0], lora_config())
    lora = [n for n, _ in model.named_modules() if n.endswith(("lora_A", "lora_B"))]
    assert len(lora) == 2 * 2 * 2  # q and v in both text layers, A and B each
    assert all(".language_model.layers." in n for n in lora)
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    # the projector trains in full (Qwen2-VL keeps it inside the vision tower as visual.merger)
    assert not any("vision_tower" in n or (".visual." in n and ".merger." not in n) for n in trained)
    assert any("multi_modal_projector" in n or ".merger." in n for n in trained)


def test_4bit_loading_runs(tiny, questions):
    import bitsandbytes  # noqa: F401 - a hard dependency: a broken install fails here, not skips
    _, folder = tiny
    model, processor = load_model(folder, quantization="4bit", device="cpu")
    assert type(model.model.language_model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    # the projector, which QLoRA trains in full, stays unquantized (a 4-bit weight takes no gradient)
    projector = [m for n, m in model.named_modules() if n.endswith(("multi_modal_projector.linear_1", "merger.mlp.0"))]
    assert len(projector) == 1 and type(projector[0]) is torch.nn.Linear
    root, records = questions
    scores = score_letters(model, processor, records[:2], root, progress=False)
    assert all(torch.isfinite(torch.tensor(p["scores"])).all() for p in scores)


def test_load_model_never_trusts_remote_code(tiny, monkeypatch):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    seen = []
    for auto in (AutoModelForImageTextToText, AutoProcessor):
        original = auto.from_pretrained

        def spy(*args, _original=original, **kwargs):
            seen.append(kwargs)
            return _original(*args, **kwargs)

        monkeypatch.setattr(auto, "from_pretrained", spy)
    load_model(tiny[1])
    assert len(seen) == 2 and all(kwargs["trust_remote_code"] is False for kwargs in seen)
    assert seen[-1]["use_safetensors"] is True


def test_unreachable_hub_fails_fast_with_a_clear_message(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a closed local port: no traffic leaves
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    start = time.perf_counter()
    with pytest.raises(HubUnreachableError, match="cannot reach the Hugging Face hub.*'some-org/not-a-model'"):
        load_model("some-org/not-a-model")
    assert time.perf_counter() - start < 10


def test_offline_hub_without_a_cached_copy(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubUnreachableError, match="not in the local cache"):
        load_model("some-org/not-a-model")


@pytest.mark.parametrize("name", ["./no-such-model", "~/no-such-model", "/no/such/model", "a/b/c"])
def test_missing_local_paths_are_named(name):
    with pytest.raises(TextonlyError, match="no model folder there") as error:
        load_model(name)
    assert not isinstance(error.value, HubUnreachableError)


def test_bad_arguments(tmp_path):
    with pytest.raises(TextonlyError, match="unknown architecture"):
        build_tiny("llava", tmp_path)
    with pytest.raises(TextonlyError, match="quantization"):
        load_model(tmp_path, quantization="8bit")
