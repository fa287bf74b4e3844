"""The study core on every architecture: train (both modes, resumable) and evaluate (all three scorings),
on the embedded LLaVA model and tiny random LLaVA-NeXT and Qwen2-VL models built from configs."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from textonly.data import load_dataset, write_dataset
from textonly.errors import TextonlyError
from textonly.tokenizer import train_tokenizer
from textonly.evaluate import EvalConfig, compare, evaluate, parse_letter
from textonly.stats import mcnemar
from textonly.train import TrainConfig, train

ARCHS = ["embedded", "llava_next", "qwen2_vl"]


@pytest.fixture(scope="module")
def small_split(worlds, tmp_path_factory):
    """Eight wings training questions (with their images and descriptions) as their own dataset."""
    source = load_dataset(worlds / "wings" / "train")
    records = source.records[:8]
    images = {r["image_path"]: source.image_file(r).read_bytes() for r in records}
    return write_dataset(tmp_path_factory.mktemp("split") / "train8", records, images=images)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A tiny random model per architecture, saved as a hub model would be."""
    from textonly import vlm
    from textonly.hub import build_tiny
    from textonly.prompts import INSTRUCTION

    root = tmp_path_factory.mktemp("models")
    corpus = [INSTRUCTION, "A. B. C. D.", "Which species is the butterfly in the image?",
              "Description of the image: the wings are orange with white spots."] * 10
    tokenizer = train_tokenizer(corpus, vocab_size=400)
    processor = vlm.make_processor(tokenizer)
    vlm.make_model("tiny", tokenizer).save_pretrained(root / "embedded")
    processor.save_pretrained(root / "embedded")
    return {"embedded": root / "embedded", **{a: build_tiny(a, root / a) for a in ARCHS[1:]}}


def _config(models, arch, data, mode, **changes):
    return TrainConfig(data=str(data), model=str(models[arch]), mode=mode, batch_size=4, max_steps=3,
                       save_steps=2, **changes)


@pytest.mark.parametrize("arch", ARCHS)
def test_train_both_modes_then_evaluate_both_scorings(arch, tiny_models, small_split, tmp_path):
    runs = {}
    for mode in ("image_text", "text_only"):
        run = train(_config(tiny_models, arch, small_split, mode), tmp_path / mode, progress=False)
        assert run["steps"] == 3 and all(torch.isfinite(torch.tensor(c["loss"])) for c in
                                         map(json.loads, (tmp_path / mode / "curves.jsonl").read_text().split("\n")[:-1]))
        assert run["energy"]["energy_mode"] and run["wall_seconds"] > 0 and run["provenance"]["data_hash"]
        assert run["config"]["answer_format"] == "option"  # the embedded preset's format, recorded
        runs[mode] = run
    # text-only batches carry no image: no image token is ever processed
    assert runs["text_only"]["tokens"]["image"] == 0 and runs["image_text"]["tokens"]["image"] > 0
    assert runs["text_only"]["tokens"]["text"] > 0
    for scoring in ("option", "letter", "generate"):
        result = evaluate(EvalConfig(model=str(tiny_models[arch]), data=str(small_split), scoring=scoring,
                                     adapter=str(tmp_path / "text_only"), batch_size=3),
                          tmp_path / f"eval-{scoring}", progress=False)
        assert result["metrics"]["overall"]["n"] == 8 and result["config"]["scoring"] == scoring
        predictions = [json.loads(x) for x in (tmp_path / f"eval-{scoring}" / "predictions.jsonl").read_text().split("\n") if x]
        assert len(predictions) == 8 and all("options" in p and "prediction" in p for p in predictions)
        if scoring == "option":  # the mean per token decides; the sum and per-character scores are kept
            assert all(len(p["sum"]) == len(p["per_char"]) == len(p["options"]) for p in predictions)
        if scoring == "generate":
            assert 0 <= result["parse_failure_rate"] <= 1
            # a parse failure is wrong, never a guess
            assert all(not p["correct"] for p in predictions if p["prediction"] is None)
    assert compare(tmp_path / "eval-letter", tmp_path / "eval-generate")["n"] == 8


def test_text_only_needs_descriptions(tiny_models, tmp_path, worlds):
    source = load_dataset(worlds / "wings" / "train")
    bare = [{k: v for k, v in r.items() if k != "descriptions"} for r in source.records[:4]]
    data = write_dataset(tmp_path / "bare", bare, images={r["image_path"]: source.image_file(r).read_bytes()
                                                          for r in bare})
    with pytest.raises(TextonlyError, match="no 'full' description"):
        train(_config(tiny_models, "embedded", data, "text_only"), tmp_path / "run", progress=False)


KILL_AT_STEP_3 = textwrap.dedent("""
    import os, sys
    from transformers import TrainerCallback
    from textonly.train import TrainConfig, train

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                os._exit(137)  # as abrupt as a kill -9: no cleanup runs

    train(TrainConfig(data=sys.argv[1], model=sys.argv[2], mode="image_text", batch_size=2, max_steps=5,
                      save_steps=2), sys.argv[3], callbacks=[Kill()], progress=False)
""")


def test_a_killed_run_resumes_and_ends_as_an_uninterrupted_one(tiny_models, small_split, tmp_path):
    config = TrainConfig(data=str(small_split), model=str(tiny_models["embedded"]), mode="image_text", batch_size=2,
                         max_steps=5, save_steps=2)
    whole = train(config, tmp_path / "whole", progress=False)
    killed = subprocess.run([sys.executable, "-c", KILL_AT_STEP_3, str(small_split), config.model,
                             str(tmp_path / "killed")], capture_output=True, text=True)
    assert killed.returncode == 137, killed.stderr[-2000:]
    assert not (tmp_path / "killed" / "run.json").exists()  # nothing looks finished
    resumed = train(config, tmp_path / "killed", progress=False)
    assert resumed["resumed_from"] == "checkpoint-2"
    assert [c["loss"] for c in map(json.loads, (tmp_path / "killed" / "curves.jsonl").read_text().split("\n")[:-1])] \
        == pytest.approx([c["loss"] for c in map(json.loads, (tmp_path / "whole" / "curves.jsonl").read_text().split("\n")[:-1])], abs=1e-5)
    assert resumed["final_loss"] == pytest.approx(whole["final_loss"], abs=1e-5)
    from safetensors.torch import load_file

    a = load_file(tmp_path / "whole" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "killed" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # a finished run is not trained again
    assert train(config, tmp_path / "whole", progress=False)["finished"] == whole["finished"]


def test_strict_letter_parsing():
    assert [parse_letter(t, 4) for t in ["B", " C.", "(A)", "D) red", "A\n"]] == [1, 2, 0, 3, 0]
    assert [parse_letter(t, 4) for t in ["", "The answer is B", "E", "b", "Bee"]] == [None] * 5


def test_mcnemar_exact():
    a = {f"q{i}": i < 12 for i in range(20)}
    b = {f"q{i}": 2 <= i < 14 for i in range(20)}  # 2 right only in a, 2 right only in b
    assert mcnemar(a, b) == {"n": 20, "a_only": 2, "b_only": 2, "p_value": 1.0}
    c = {f"q{i}": False for i in range(20)}
    result = mcnemar(a, c)  # 12 discordant, all one way: p = 2 / 2**12
    assert result["a_only"] == 12 and result["p_value"] == pytest.approx(2 / 2 ** 12)
    with pytest.raises(ValueError, match="different questions"):
        mcnemar(a, {"other": True})
