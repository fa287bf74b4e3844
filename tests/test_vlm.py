"""The embedded base VLM: tokenizer and chat template, processor agreement, LoRA placement,
a tiny pretrain (encoder, then the VLM's stages) -> save -> reload -> generate -> score round
trip, reproducibility, and resuming a killed pretraining."""

import hashlib
import json

import pytest
import torch
from PIL import Image

from textonly.models.lora import lora_config
from textonly.organism import vlm
from textonly.models.scoring import letter_token_ids, score_options
from textonly.organism.pretrain import PretrainConfig, encoder_path, plan_schedule, pretrain
from textonly.organism.pretrain_samples import SampleMaker, conversation
from textonly.core.prompts import mcq_messages
from textonly.organism.tokenizer import train_tokenizer

CORPUS = ["Which species is the butterfly in the image?", "A. Kotha Velari", "Answer with the option's letter",
          "USER: ASSISTANT: The wings are orange.", "It has three spots per forewing.", "C. Mira Sol"] * 20
RECORD = {"question": "Which species is the butterfly in the image?", "options": ["Kotha", "Velari", "Mira", "Sol"],
          "answer": 2, "category": "Nymphs", "id_": "q0", "question_type": 1, "image_path": "x.png",
          "descriptions": {"oracle-full": "The wings are orange."}}


@pytest.fixture(scope="module")
def processor():
    return vlm.make_processor(train_tokenizer(CORPUS, vocab_size=300))


def test_chat_template_renders_image_and_text_only_turns(processor):
    with_image = processor.apply_chat_template(mcq_messages(RECORD, "image"), add_generation_prompt=True)
    assert with_image.startswith("<s>USER: <image>\nWhich species") and with_image.endswith(" ASSISTANT:")
    text_only = processor.apply_chat_template(mcq_messages(RECORD, "no_image"), add_generation_prompt=True)
    assert "<image>" not in text_only and "C. Mira" in text_only
    described = processor.apply_chat_template(mcq_messages(RECORD, "description"), add_generation_prompt=True)
    assert "<image>" not in described and "The wings are orange." in described
    trained = processor.apply_chat_template(mcq_messages(RECORD, "image", answer=True, answer_format="option"))
    assert trained.endswith(" ASSISTANT: Mira</s>")
    # the role markers are single tokens, and the answer is the word as it stands in its option line
    ids = processor.tokenizer(trained, add_special_tokens=False)["input_ids"]
    tokens = [processor.tokenizer.decode([i]) for i in ids]
    assert "USER:" in tokens and " ASSISTANT:" in tokens
    answer = ids[tokens.index(" ASSISTANT:") + 1:-1]
    line = tokens.index("C") + 2  # "\nC. Mira": after "C" and "."
    assert processor.tokenizer.decode(answer) == " Mira" and ids[line:line + len(answer)] == answer


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
    assert answers.replace(" ", "") == "Mira</s>Kotha</s>"  # pretraining answers with the option's text
    described = processor.tokenizer.decode(maker.chat(conversation([RECORD], "description", "Orange wings."))[0])
    assert "Description of the image: Orange wings." in described and "<image>" not in described


def test_letter_variants_are_single_tokens(processor):
    ids = letter_token_ids(processor.tokenizer)
    assert len(ids) == 4 and all(len(v) >= 1 for v in ids)
    assert len({i for v in ids for i in v}) == sum(len(v) for v in ids)  # no letter shares an id


def test_lora_attaches_to_the_language_model_only(processor):
    from peft import get_peft_model

    model = get_peft_model(vlm.make_model("tiny", processor.tokenizer), lora_config())
    lora = [n for n, _ in model.named_modules() if n.endswith("lora_A")]
    assert lora and all(".language_model." in n for n in lora)
    assert not any("vision_tower" in n for n, p in model.named_parameters() if p.requires_grad)
    assert any("multi_modal_projector" in n for n, p in model.named_parameters() if p.requires_grad)


@pytest.mark.parametrize("size, low, high", [("tiny", 0.5e6, 1.5e6), ("small", 3e6, 7e6), ("base", 15e6, 30e6)])
def test_sizes(processor, size, low, high):
    assert low <= vlm.size_summary(vlm.make_model(size, processor.tokenizer))["total"] <= high


def test_schedule_image_start_fraction():
    def plan(fraction):
        return plan_schedule(PretrainConfig(size="tiny", steps=(10, 6, 4), image_start_fraction=fraction))

    late, early, mid = plan(1.0), plan(0.0), plan(0.8)
    assert len(late) == len(early) == len(mid) == 20
    assert late[:10] == ["language"] * 10 and late[10:16] == ["alignment"] * 6
    assert mid[:8] == ["language"] * 8 and "alignment" in early[:10]
    assert all(s.count("instruction") == 4 and s[-4:] == ["instruction"] * 4 for s in (late, early, mid))


def test_instruction_answers_are_the_option_texts(processor):
    maker = SampleMaker(processor, 4)
    second = {**RECORD, "id_": "q1", "answer": 0}
    ids, labels = maker.chat(conversation([RECORD, second], "image"))
    answers = processor.tokenizer.decode([i for i, lab in zip(ids, labels) if lab != -100])
    assert answers.replace(" ", "") == "Mira</s>Kotha</s>"


def _weights_hash(path):
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


#: A tiny encoder schedule for tests (its own folder beside the model, built once per settings).
ENCODER = {"steps": 4, "images_per_world": 64, "images_per_kind": 1, "probe_images": 60, "checkpoint_every": 2}


@pytest.mark.slow
def test_tiny_round_trip_and_same_seed_same_weights(worlds, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from textonly.data.layout import load_dataset

    config = PretrainConfig(size="tiny", worlds=str(worlds), steps=(3, 3, 3), seed=5, encoder=ENCODER)
    first = pretrain(config, tmp_path / "a" / "m", progress=False, evaluate=False)
    again = pretrain(PretrainConfig(size="tiny", worlds=str(worlds), steps=(3, 3, 3), seed=5, encoder=ENCODER),
                     tmp_path / "b" / "m", progress=False, evaluate=False)
    assert _weights_hash(first) == _weights_hash(again)
    encoder = encoder_path(config, first)
    assert _weights_hash(encoder) == _weights_hash(encoder_path(config, again))

    saved = json.loads((first / "pretrain_config.json").read_text())
    assert saved["config"]["size"] == "tiny" and len(saved["targets_with_appearance_in_text"]) > 0
    assert saved["encoder"]["folder"] == encoder.name
    assert len((first / "curves.jsonl").read_text().splitlines()) == 9

    processor = AutoProcessor.from_pretrained(first)
    model = AutoModelForImageTextToText.from_pretrained(first)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    # the frozen tower is the encoder's vision tower, weight for weight
    from transformers import AutoModel

    clip = AutoModel.from_pretrained(encoder)
    assert type(clip).__name__ == "CLIPModel"
    tower = model.model.vision_tower.state_dict()
    assert all(torch.equal(tower[k], v) for k, v in clip.vision_model.state_dict().items())
    root = worlds / "wings" / "test"
    records = load_dataset(root, check_images=False).records[:6]
    predictions = score_options(model, processor, records, root, batch_size=4, progress=False)
    assert [p["id_"] for p in predictions] == [r["id_"] for r in records]
    assert all(len(p["scores"]) == 4 for p in predictions)
    with Image.open(root / "images" / records[0]["image_path"]) as image:
        prompt = processor.apply_chat_template(mcq_messages(records[0]), add_generation_prompt=True)
        inputs = processor(text=[prompt], images=[image.convert("RGB")], return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] > inputs["input_ids"].shape[1]
    single = score_options(model, processor, records[:2], root, batch_size=1, progress=False)
    assert torch.allclose(torch.tensor([p["scores"] for p in single]),
                          torch.tensor([p["scores"] for p in predictions[:2]]), atol=1e-3)


class Killed(Exception):
    """Stands for the process being killed mid-run."""


@pytest.mark.slow
def test_killed_pretraining_resumes_to_the_same_weights(worlds, tmp_path, monkeypatch):
    import textonly.organism.encoder_model as encoder_module
    import textonly.organism.pretrain as module

    config = PretrainConfig(size="tiny", worlds=str(worlds), steps=(2, 2, 2), checkpoint_every=2, encoder=ENCODER)
    whole = pretrain(config, tmp_path / "whole" / "m", progress=False, evaluate=False)

    def dies_after(cls, method, calls):
        original, seen = getattr(cls, method), []

        def wrapper(self, *args):
            seen.append(1)
            if len(seen) > calls:
                raise Killed
            return original(self, *args)
        monkeypatch.setattr(cls, method, wrapper)

    dies_after(encoder_module.Batches, "draw", 3)  # the encoder dies after its checkpoint at step 2
    with pytest.raises(Killed):
        pretrain(config, tmp_path / "cut" / "m", progress=False, evaluate=False)
    assert (tmp_path / "cut" / f"{encoder_path(config, tmp_path / 'cut' / 'm').name}.checkpoint.pt").is_file()
    monkeypatch.undo()
    dies_after(module.Samples, "batch", 3)  # then the VLM dies after its checkpoint at step 2
    with pytest.raises(Killed):
        pretrain(config, tmp_path / "cut" / "m", progress=False, evaluate=False)
    assert (tmp_path / "cut" / "m.checkpoint.pt").is_file() and not (tmp_path / "cut" / "m").exists()
    monkeypatch.undo()
    resumed = pretrain(config, tmp_path / "cut" / "m", progress=False, evaluate=False)
    assert json.loads((resumed / "pretrain_config.json").read_text())["resumed_at_step"] == 2
    assert _weights_hash(resumed) == _weights_hash(whole)
    assert _weights_hash(encoder_path(config, resumed)) == _weights_hash(encoder_path(config, whole))
    assert not (tmp_path / "cut" / "m.checkpoint.pt").exists()


@pytest.mark.slow
def test_rebuild_skipped_when_nothing_changed(worlds, tmp_path, monkeypatch):
    import textonly.organism.pretrain as module

    config = PretrainConfig(size="tiny", worlds=str(worlds), steps=(1, 1, 1), encoder=ENCODER)
    out = pretrain(config, tmp_path / "m", progress=False, evaluate=False)
    monkeypatch.setattr(module, "gather_material", lambda *a: pytest.fail("retrained"))
    assert pretrain(config, tmp_path / "m", progress=False, evaluate=False) == out


@pytest.mark.parametrize("answer_format, answer", [("option", "Mira"), ("letter", "C")])
def test_training_labels_the_answer_in_its_format(processor, tmp_path, answer_format, answer):
    from textonly.pipeline.train import Collator

    (tmp_path / "images").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "images" / "x.png")
    batch = Collator(processor, tmp_path, "oracle-full", answer_format)([(RECORD, "image"), (RECORD, "description")])
    for ids, labels in zip(batch["input_ids"], batch["labels"]):
        kept = [int(i) for i, lab in zip(ids, labels) if lab != -100]
        assert processor.tokenizer.decode(kept).strip() == f"{answer}</s>"
