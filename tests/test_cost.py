"""Cost accounting: the paper's architectures built offline, tokens, and the FLOP formula."""

import pytest
import torch
from PIL import Image

from textonly.cost import flops as cost
from textonly.models import architectures
from textonly.data.layout import write_dataset
from textonly.core.errors import TextonlyError
from textonly.organism.tokenizer import train_tokenizer

RECORD = {"question": "Which species is shown in the image?", "options": ["MONARCH", "ADMIRAL", "PEACOCK", "ATLAS"],
          "answer": 2, "category": "c", "question_type": 1,
          "descriptions": {"d": "An orange butterfly with black veins and white spots on the margin."}}


def _image_bytes(size, colour=(200, 90, 40)):
    import io

    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def images_dataset(tmp_path_factory):
    """Two questions on a small square and a large wide image."""
    root = tmp_path_factory.mktemp("cost") / "data"
    records = [dict(RECORD, id_="small", image_path="small.png"), dict(RECORD, id_="wide", image_path="wide.png")]
    write_dataset(root, records, card="# cost test\n",
                  images={"small.png": _image_bytes((224, 224)), "wide.png": _image_bytes((1400, 500))})
    return root, records


def test_published_sizes():
    """The full-size configs have the published parameter counts (about 7B, 7.6B, 8.3B)."""
    counts = {}
    for name in architectures.ARCHITECTURES:
        model = architectures.model(name, device="meta")
        counts[name] = sum(p.numel() for p in model.parameters()) / 1e9
    assert 7.0 < counts["llava-v1.6-vicuna-7b"] < 7.1
    assert 7.5 < counts["llava-v1.6-mistral-7b"] < 7.6
    assert 8.2 < counts["qwen2-vl-7b"] < 8.4


@pytest.mark.parametrize("name", list(architectures.ARCHITECTURES))
def test_processor_counts_image_tokens(name, images_dataset):
    root, records = images_dataset
    processor = architectures.processor(name)
    rows = cost.sample_tokens(processor, records, root, description="d", progress=False)
    small, wide = rows
    assert small["image_tokens"] > 0 and wide["image_tokens"] > small["image_tokens"]
    assert small["text_tokens"] == wide["text_tokens"]  # same question, different images
    assert small["text_only_tokens"] > small["description_tokens"] > 10
    if name.startswith("llava"):
        assert small["vision_tiles"] == 3 and wide["vision_tiles"] == 4  # base + 1x2 grid; base + 1x3 grid
        assert processor.tokenizer.image_token_id == 32000
    else:
        assert small["vision_patches"] == 16 * 16 and small["image_tokens"] == 64  # 224 px: 16x16 patches, 2x2 merge
        assert processor.tokenizer.convert_tokens_to_ids("<|image_pad|>") == 151655


def test_qwen_resolution_bounds_change_tokens(images_dataset):
    root, records = images_dataset
    low = architectures.processor("qwen2-vl-7b", max_pixels=256 * 28 * 28)
    high = architectures.processor("qwen2-vl-7b")
    wide_low = cost.sample_tokens(low, records[1:], root, description=None, progress=False)[0]
    wide_high = cost.sample_tokens(high, records[1:], root, description=None, progress=False)[0]
    assert wide_low["image_tokens"] <= 256 < wide_high["image_tokens"]


def _narrow(name):
    """The architecture with its real layer types and patching but narrow widths and 2 layers."""
    config = architectures.config(name, layers=2, vision_layers=2)
    text = config.text_config
    text.hidden_size, text.intermediate_size, text.num_attention_heads = 64, 96, 4
    text.num_key_value_heads = 2 if name != "llava-v1.6-vicuna-7b" else 4
    text.head_dim = 16
    if config.model_type == "llava_next":
        v = config.vision_config
        v.hidden_size, v.intermediate_size, v.num_attention_heads = 32, 64, 2
    else:
        text.rope_parameters["mrope_section"] = [2, 3, 3]
        v = config.vision_config
        v.embed_dim, v.num_heads, v.hidden_size = 32, 2, 64
    return config


@pytest.mark.parametrize("name", list(architectures.ARCHITECTURES))
@pytest.mark.parametrize("mode", cost.COST_MODES)
def test_flop_formula_matches_counter(name, mode, images_dataset):
    """The formula equals torch's FLOP counter on the real classes (eager attention), LoRA as trained."""
    from peft import get_peft_model
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForImageTextToText

    from textonly.pipeline.train import Collator
    from textonly.models.lora import lora_config

    root, records = images_dataset
    config = _narrow(name)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(config, attn_implementation="eager")
    model = get_peft_model(model, lora_config(r=cost.LORA_R, alpha=32))
    processor = architectures.processor(name)
    row = cost.sample_tokens(processor, records[1:], root, description="d", progress=False)[0]
    batch = Collator(processor, root, "d")([(records[1], "image" if mode == "image_text" else "description")])
    with FlopCounterMode(display=False) as counter:
        model(**batch).loss.backward()
    predicted = cost.training_flops(config, row, mode)["total"]
    assert predicted == counter.get_total_flops()


def test_run_cost_and_bad_mode():
    config = architectures.config("qwen2-vl-7b")
    rows = [{"text_tokens": 60, "image_tokens": 64, "vision_patches": 256, "text_only_tokens": 120}] * 3
    run = cost.run_cost(config, rows)
    assert run["image_text"]["tokens"] == 5 * 3 * 124 and run["text_only"]["tokens"] == 5 * 3 * 120
    assert run["image_text"]["parts"]["vision_tower"] > 0 == run["text_only"]["parts"]["vision_tower"]
    assert -1 < run["saving"] < 1
    with pytest.raises(TextonlyError, match="choose from"):
        cost.training_flops(config, rows[0], "mixed")


@pytest.fixture(scope="module")
def embedded(images_dataset):
    """A tiny embedded VLM (the study's own LLaVA) and its processor."""
    from textonly.organism import vlm

    tokenizer = train_tokenizer([RECORD["question"], " ".join(RECORD["options"]),
                                     RECORD["descriptions"]["d"]] * 3, vocab_size=300)
    return vlm.make_model("tiny", tokenizer), vlm.make_processor(tokenizer)


@pytest.mark.parametrize("mode", cost.COST_MODES)
def test_flop_formula_matches_counter_embedded(mode, embedded, images_dataset):
    from peft import get_peft_model
    from torch.utils.flop_counter import FlopCounterMode

    from textonly.pipeline.train import Collator
    from textonly.models.lora import lora_config

    root, records = images_dataset
    model, processor = embedded
    model.config._attn_implementation = "eager"
    for sub in (model.config.text_config, model.config.vision_config):
        sub._attn_implementation = "eager"
    peft_model = get_peft_model(model, lora_config(r=cost.LORA_R, alpha=32))
    row = cost.sample_tokens(processor, records[:1], root, description="d", progress=False)[0]
    assert row["vision_tiles"] == 1
    batch = Collator(processor, root, "d")([(records[0], "image" if mode == "image_text" else "description")])
    with FlopCounterMode(display=False) as counter:
        peft_model(**batch).loss.backward()
    assert cost.training_flops(model.config, row, mode)["total"] == counter.get_total_flops()
    peft_model.unload()


def test_pretraining_flops_match_counter(embedded):
    """Pretraining's figure (the formula trained in full, on its own padded batches) is the FLOP
    counter's for its samples trained one at a time: language model and projector trained, tower frozen."""
    from torch.utils.flop_counter import FlopCounterMode

    from textonly.core.flops import batch_flops
    from textonly.organism.pretrain_samples import collate

    model, processor = embedded
    for config in (model.config, model.config.text_config, model.config.vision_config):
        config._attn_implementation = "eager"
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    for name, p in model.named_parameters():
        p.requires_grad = ".vision_tower." not in f".{name}"
    tokenizer = processor.tokenizer
    words = tokenizer(RECORD["descriptions"]["d"], add_special_tokens=False)["input_ids"]
    image = [tokenizer.image_token_id] * model.config.image_seq_length + words[:5]
    samples = [(words, words, None), (image, image, 0), (words[:4], words[:4], None)]
    size = model.config.vision_config.image_size
    pixels = torch.randn(1, 3, size, size)
    try:
        counted = 0
        for sample in samples:
            with FlopCounterMode(display=False) as counter:
                model(**collate([sample], pixels, tokenizer.pad_token_id)).loss.backward()
            counted += counter.get_total_flops()
        model.zero_grad(set_to_none=True)
    finally:
        for name, p in model.named_parameters():
            p.requires_grad = before[name]
    assert batch_flops(model.config, collate(samples, pixels, tokenizer.pad_token_id), lora_r=None) == counted


@pytest.mark.parametrize("name", list(architectures.ARCHITECTURES))
def test_batch_flops_are_the_samples_flops(name, images_dataset):
    """A padded batch of images and descriptions costs what its samples cost alone, as the
    processor's own counts give them (tiles and patches read from the model's config)."""
    from textonly.core.flops import batch_flops
    from textonly.pipeline.train import Collator

    root, records = images_dataset
    processor, config = architectures.processor(name), architectures.config(name)
    small, wide = cost.sample_tokens(processor, records, root, description="d", progress=False)
    batch = Collator(processor, root, "d")([(records[0], "image"), (records[1], "description"),
                                            (records[1], "image")])
    expected = sum(cost.training_flops(config, row, mode)["total"]
                   for row, mode in ((small, "image_text"), (wide, "text_only"), (wide, "image_text")))
    assert batch_flops(config, batch) == expected


def test_study_tables_take_the_flops_the_run_recorded():
    """runs.csv's train_flops is the figure training recorded (the formula over its samples);
    a run that recorded none gets no estimate in its place."""
    import math

    from textonly.study.collect import train_flops

    assert train_flops({"flops": {"per_epoch": 7, "total": 21}}) == 21
    assert math.isnan(train_flops({"tokens": {"text": 1000, "image": 640}}))


def test_measure_training_on_cpu(embedded, images_dataset, tmp_path, monkeypatch):
    """Both modes run and leave the model without LoRA; the FLOPs are the formula's for the samples
    timed, and MFU is the achieved FLOP/s over the matmul peak measured in the same run."""
    from textonly.cost import measure

    root, records = images_dataset
    model, processor = embedded
    peaks, real_peak = [], measure.matmul_peak

    def quick_peak(device, dtype):  # the real measurement, short, remembered to compare with the result
        peaks.append(real_peak(device, dtype, size=256, seconds=0.2))
        return peaks[-1]

    monkeypatch.setattr(measure, "matmul_peak", quick_peak)
    rows = cost.sample_tokens(processor, records, root, description="d", progress=False)
    timed = [rows[i % 2] for i in range(1, 5)]  # warmup 1, then records cycled: wide, small, wide, small
    results = {mode: measure.measure_training(model, processor, records, root, mode=mode, out=tmp_path,
                                              description="d", samples=4, warmup=1, accumulation=2, progress=False)
               for mode in cost.COST_MODES}
    for (mode, r), peak in zip(results.items(), peaks, strict=True):
        expected = sum(cost.training_flops(model.config, row, mode)["total"] for row in timed) / 4
        assert r["flops_per_sample"] == expected and r["samples"] == 4 and r["energy_mode"]
        assert r["achieved_flops_per_s"] == pytest.approx(4 * expected / r["seconds"])
        assert r["peak_flops_per_s"] == peak and r["mfu"] == pytest.approx(r["achieved_flops_per_s"] / peak)
    assert results["image_text"]["image_tokens_per_sample"] == 64 and results["text_only"]["image_tokens_per_sample"] == 0
    assert not any("lora" in n for n, _ in model.named_parameters())
    with pytest.raises(TextonlyError, match="description"):
        measure.measure_training(model, processor, records, root, mode="text_only", out=tmp_path)


@pytest.mark.parametrize("name", list(architectures.ARCHITECTURES))
def test_image_tokens_from_sizes_match_the_processor(name, images_dataset):
    root, records = images_dataset
    measured = cost.sample_tokens(architectures.processor(name), records, root, description=None, progress=False)
    from_sizes = cost.image_tokens_for_sizes(name, [(r["width"], r["height"]) for r in measured])
    for m, s in zip(measured, from_sizes):
        assert (m["image_tokens"], m["vision_tiles"], m["vision_patches"]) == \
            (s["image_tokens"], s["vision_tiles"], s["vision_patches"])


def test_break_even_and_sweep(images_dataset):
    root, records = images_dataset
    rows = [dict(r, architecture="qwen2-vl-7b", dataset="t") for r in
            cost.sample_tokens(architectures.processor("qwen2-vl-7b"), records, root, description="d", progress=False)]
    config = architectures.config("qwen2-vl-7b")
    small = rows[0]
    n = cost.break_even_description_tokens(config, small)
    rest = small["text_only_tokens"] - small["description_tokens"]
    assert cost.training_flops(config, dict(small, text_only_tokens=rest + n), "text_only")["total"] >= \
        cost.training_flops(config, small, "image_text")["total"] > \
        cost.training_flops(config, dict(small, text_only_tokens=rest + n - 1), "text_only")["total"]
    sweep = {s["setting"]: s for s in cost.resolution_sweep(rows)}
    assert sweep["max 64 tokens"]["image_tokens_per_sample"] < sweep["max 16384 tokens"]["image_tokens_per_sample"]
    assert sweep["max 64 tokens"]["predicted_saving"] < sweep["max 16384 tokens"]["predicted_saving"]


def test_cli_cost_tokens_writes_table_and_provenance(images_dataset, tmp_path, capsys):
    import csv
    import json

    from textonly.cli.main import main

    root, _ = images_dataset
    out = tmp_path / "tokens.csv"
    assert main(["cost", "tokens", "--data", f"t={root}", "--description", "d", "--arch", "qwen2-vl-7b",
                 "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 2 and {r["architecture"] for r in rows} == {"qwen2-vl-7b"}
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["description"] == "d" and "git_commit" in meta["provenance"] and "dashscope" in meta["architectures"][
        "qwen2-vl-7b"]["tokenizer"]
    assert main(["cost", "tokens", "--data", str(root), "--description", "d", "--out", str(out)]) == 2
    assert "NAME=FOLDER" in capsys.readouterr().err


def test_vocabulary_folder_override(tmp_path, monkeypatch):
    monkeypatch.setenv(architectures.VOCAB_DIR_ENV, str(tmp_path))
    architectures._qwen_tokenizer_object.cache_clear()
    try:
        with pytest.raises(TextonlyError, match="qwen.tiktoken"):
            architectures.tokenizer("qwen2-vl-7b")
    finally:
        architectures._qwen_tokenizer_object.cache_clear()


@pytest.mark.shared_data
def test_committed_token_table_matches_the_processors_on_real_images():
    """The committed cost_tokens.csv is what the processors give on the real K-VISCUIT images now."""
    from conftest import shared_dataset
    from textonly.cost import report as cost_report
    from textonly.data.layout import load_dataset

    root = shared_dataset("k-viscuit")
    rows, _ = cost_report.load_tokens()
    committed = {(r["architecture"], r["image_path"]): r for r in rows if r["dataset"] == "k-viscuit"}
    firsts = {}
    for record in load_dataset(root).records:
        firsts.setdefault(record["image_path"], record)
    sample = [firsts[p] for p in sorted(firsts)[::40]]  # 6 images of every size class
    for arch in architectures.ARCHITECTURES:
        for row in cost.sample_tokens(architectures.processor(arch), sample, root, description=None, progress=False):
            saved = committed[(arch, row["image_path"])]
            assert (row["image_tokens"], row["text_tokens"], row["width"], row["height"]) == \
                (saved["image_tokens"], saved["text_tokens"], saved["width"], saved["height"])
