"""The embedded base VLM: tokenizer and chat template, processor agreement, LoRA placement,
a tiny pretrain -> save -> reload -> generate -> score round trip, and reproducibility."""

import hashlib
import json

import pytest
import torch
from PIL import Image

from textonly import vlm
from textonly.evaluate import letter_token_ids, score_letters
from textonly.pretrain import PretrainConfig, SampleMaker, conversation, plan_schedule, pretrain
from textonly.prompts import mcq_messages

CORPUS = ["Which species is the butterfly in the image?", "A. Kotha Velari", "Answer with the option's letter",
          "USER: ASSISTANT: The wings are orange.", "It has three spots per forewing."] * 20
RECORD = {"question": "Which species is the butterfly in the image?", "options": ["Kotha", "Velari", "Mira", "Sol"],
          "answer": 2, "category": "Nymphs", "id_": "q0", "question_type": 1, "image_path": "x.png",
          "descriptions": {"full": "The wings are orange."}}


@pytest.fixture(scope="module")
def processor():
    return vlm.make_processor(vlm.train_tokenizer(CORPUS, vocab_size=300))


def test_chat_template_renders_image_and_text_only_turns(processor):
    with_image = processor.apply_chat_template(mcq_messages(RECORD, "image"), add_generation_prompt=True)
    assert with_image.startswith("<s>USER: <image>\nWhich species") and with_image.endswith(" ASSISTANT: ")
    text_only = processor.apply_chat_template(mcq_messages(RECORD, "no_image"), add_generation_prompt=True)
    assert "<image>" not in text_only and "C. Mira" in text_only
    described = processor.apply_chat_template(mcq_messages(RECORD, "description"), add_generation_prompt=True)
    assert "<image>" not in described and "The wings are orange." in described
    trained = processor.apply_chat_template(mcq_messages(RECORD, "image", answer=True))
    assert trained.endswith(" ASSISTANT: C</s>")
    # the role markers are single tokens, and the answer letter is the token of its option line
    ids = processor.tokenizer(trained, add_special_tokens=False)["input_ids"]
    tokens = [processor.tokenizer.decode([i]) for i in ids]
    assert "USER: " in tokens and " ASSISTANT: " in tokens
    assert tokens[-2] == "C" and ids[-2] == ids[tokens.index("C")]


def test_sample_ids_match_the_processor(processor):
    model = vlm.make_model("tiny", processor.tokenizer)
    maker = SampleMaker(processor, model.config.image_seq_length)
    ids, labels = maker.chat(mcq_messages(RECORD, "image", answer=True))
    prompt = processor.apply_chat_template(mcq_messages(RECORD, "image"), add_generation_prompt=True)
    expected = processor(text=[prompt], images=[Image.new("RGB", (64, 64))], return_tensors="pt")["input_ids"][0]
    assert ids[: len(expected)] == expected.tolist()
    answer = [i for i, lab in zip(ids, labels) if lab != -100]
    assert processor.tokenizer.decode(answer).strip() == "C</s>"


def test_every_answer_of_a_conversation_is_labelled_and_nothing_else(processor):
    maker = SampleMaker(processor, 4)
    second = {**RECORD, "id_": "q1", "answer": 0}
    ids, labels = maker.chat(conversation([RECORD, second], "image"))
    assert ids.count(processor.tokenizer.image_token_id) == 4  # one image, expanded once
    answers = processor.tokenizer.decode([i for i, lab in zip(ids, labels) if lab != -100])
    assert answers.replace(" ", "") == "C</s>K</s>".replace("K", "A")
    described = processor.tokenizer.decode(maker.chat(conversation([RECORD], "description", "Orange wings."))[0])
    assert "Description of the image: Orange wings." in described and "<image>" not in described


def test_letter_variants_are_single_tokens(processor):
    ids = letter_token_ids(processor.tokenizer)
    assert len(ids) == 4 and all(len(v) >= 1 for v in ids)
    assert len({i for v in ids for i in v}) == sum(len(v) for v in ids)  # no letter shares an id


def test_lora_attaches_to_the_language_model_only(processor):
    from peft import get_peft_model

    model = get_peft_model(vlm.make_model("tiny", processor.tokenizer), vlm.lora_config())
    lora = [n for n, _ in model.named_modules() if n.endswith("lora_A")]
    assert lora and all(".language_model." in n for n in lora)
    assert not any("vision_tower" in n for n, p in model.named_parameters() if p.requires_grad)
    assert any("multi_modal_projector" in n for n, p in model.named_parameters() if p.requires_grad)


@pytest.mark.parametrize("size, low, high", [("tiny", 0.5e6, 1.5e6), ("small", 3e6, 7e6), ("base", 15e6, 25e6)])
def test_sizes(processor, size, low, high):
    assert low <= vlm.size_summary(vlm.make_model(size, processor.tokenizer))["total"] <= high


def test_schedule_image_start_fraction():
    def plan(fraction, binding=0):
        return plan_schedule(PretrainConfig(size="tiny", steps=(10, 6, 4), binding_steps=binding,
                                            image_start_fraction=fraction))

    late, early, mid = plan(1.0), plan(0.0), plan(0.8)
    assert len(late) == len(early) == len(mid) == 20
    assert late[:10] == ["language"] * 10 and late[10:16] == ["alignment"] * 6
    assert mid[:8] == ["language"] * 8 and "alignment" in early[:10]
    assert all(s.count("instruction") == 4 and s[-4:] == ["instruction"] * 4 for s in (late, early, mid))
    # answer-format drills are text: spread through the language steps, before any image at F = 1
    drilled = plan(1.0, binding=5)
    assert drilled[:15].count("binding") == 5 and drilled[:15].count("language") == 10
    positions = [i for i, kind in enumerate(drilled) if kind == "binding"]
    assert positions[-1] - positions[0] >= 8  # spread out, not one block


def test_binding_drills_ask_with_replacement_in_the_chat_format(processor):
    import numpy as np

    from textonly.pretrain import binding_drill

    words = [f"word{i}" for i in range(10)]
    messages = binding_drill(words, np.random.default_rng(0), n_turns=6)
    assert len(messages) == 12 and messages[0]["content"].startswith("A. word")
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    assert set(answers) <= set("ABCD") and len(set(answers)) < len(answers)  # repeats: no elimination
    listing = messages[0]["content"].split("\n")[:4]
    for question, answer in zip(messages[0::2], answers):
        asked = question["content"].rsplit("Which option is ", 1)[1].rstrip("?")
        assert listing["ABCD".index(answer)] == f"{answer}. {asked}"


def _weights_hash(path):
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


@pytest.mark.slow
def test_tiny_round_trip_and_same_seed_same_weights(worlds, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from textonly.data import load_dataset

    config = PretrainConfig(size="tiny", worlds=str(worlds), steps=(3, 3, 3), seed=5)
    first = pretrain(config, tmp_path / "a", progress=False, evaluate=False)
    again = pretrain(PretrainConfig(size="tiny", worlds=str(worlds), steps=(3, 3, 3), seed=5), tmp_path / "b",
                     progress=False, evaluate=False)
    assert _weights_hash(first) == _weights_hash(again)

    saved = json.loads((first / "pretrain_config.json").read_text())
    assert saved["config"]["size"] == "tiny" and len(saved["targets_with_appearance_in_text"]) > 0
    assert len((first / "curves.jsonl").read_text().splitlines()) == 9

    processor = AutoProcessor.from_pretrained(first)
    model = AutoModelForImageTextToText.from_pretrained(first)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    root = worlds / "wings" / "test"
    records = load_dataset(root, check_images=False).records[:6]
    predictions = score_letters(model, processor, records, root, batch_size=4, progress=False)
    assert [p["id_"] for p in predictions] == [r["id_"] for r in records]
    assert all(len(p["scores"]) == 4 for p in predictions)
    with Image.open(root / "images" / records[0]["image_path"]) as image:
        prompt = processor.apply_chat_template(mcq_messages(records[0]), add_generation_prompt=True)
        inputs = processor(text=[prompt], images=[image.convert("RGB")], return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] > inputs["input_ids"].shape[1]
    # the same batch scored one by one and batched agrees (padding does not leak)
    single = score_letters(model, processor, records[:2], root, batch_size=1, progress=False)
    assert torch.allclose(torch.tensor([p["scores"] for p in single]),
                          torch.tensor([p["scores"] for p in predictions[:2]]), atol=1e-4)


@pytest.mark.slow
def test_rebuild_skipped_when_nothing_changed(worlds, tmp_path, monkeypatch):
    import textonly.pretrain as module

    config = PretrainConfig(size="tiny", worlds=str(worlds), steps=(1, 1, 1))
    out = pretrain(config, tmp_path / "m", progress=False, evaluate=False)
    monkeypatch.setattr(module, "gather_material", lambda *a: pytest.fail("retrained"))
    assert pretrain(config, tmp_path / "m", progress=False, evaluate=False) == out
