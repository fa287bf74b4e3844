"""The study core on every architecture: train (both modes, resumable) and evaluate (all three scorings),
on the embedded LLaVA model and tiny random LLaVA-NeXT and Qwen2-VL models built from configs."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import TrainerCallback

from textonly.data.layout import load_dataset, write_dataset
from textonly.core.errors import TextonlyError
from textonly.core.fileio import read_jsonl
from textonly.organism.tokenizer import train_tokenizer
from textonly.pipeline.evaluate import EvalConfig, compare, evaluate
from textonly.models.scoring import parse_letter
from textonly.core.stats import mcnemar
from textonly.pipeline.train import TrainConfig, train

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
    from textonly.organism import vlm
    from textonly.models.hub import build_tiny
    from textonly.core.prompts import INSTRUCTION

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
    assert runs["text_only"]["segments"] == 1 and runs["text_only"]["resumed_from"] is None
    for scoring in ("option", "letter", "generate"):
        result = evaluate(EvalConfig(model=str(tiny_models[arch]), data=str(small_split), scoring=scoring,
                                     adapter=str(tmp_path / "text_only"), batch_size=3),
                          tmp_path / f"eval-{scoring}", progress=False)
        assert result["metrics"]["overall"]["n"] == 8 and result["config"]["scoring"] == scoring
        # evaluated where training runs, with the run's (absent) quantization
        assert result["device"] == ("cuda" if torch.cuda.is_available() else "cpu") and result["quantization"] is None
        predictions = read_jsonl(tmp_path / f"eval-{scoring}" / "predictions.jsonl")
        assert [p["id_"] for p in predictions] == [r["id_"] for r in load_dataset(small_split).records]
        # correct means the prediction is the answer (a parse failure, None, is wrong, never a guess),
        # and the accuracy is the fraction correct
        assert all(p["correct"] == (p["prediction"] == p["answer"]) for p in predictions)
        assert result["metrics"]["overall"]["accuracy"] == pytest.approx(sum(p["correct"] for p in predictions) / 8)
        if scoring == "option":  # the mean per token decides; the sum and per-character scores are kept
            assert all(len(p["sum"]) == len(p["per_char"]) == len(p["options"]) for p in predictions)
            assert all(p["prediction"] == max(range(4), key=p["scores"].__getitem__) for p in predictions)
        if scoring == "generate":
            failures = [p for p in predictions if parse_letter(p["output"], len(p["options"])) is None]
            assert [p["prediction"] for p in failures] == [None] * len(failures)
            assert result["parse_failure_rate"] == pytest.approx(len(failures) / 8)
    assert compare(tmp_path / "eval-letter", tmp_path / "eval-generate")["n"] == 8


def test_text_only_needs_descriptions(tiny_models, tmp_path, worlds):
    source = load_dataset(worlds / "wings" / "train")
    bare = [{k: v for k, v in r.items() if k != "descriptions"} for r in source.records[:4]]
    data = write_dataset(tmp_path / "bare", bare, images={r["image_path"]: source.image_file(r).read_bytes()
                                                          for r in bare})
    with pytest.raises(TextonlyError, match="no 'oracle-full' description"):
        train(_config(tiny_models, "embedded", data, "text_only"), tmp_path / "run", progress=False)


KILL_AT_STEP_3 = textwrap.dedent("""
    import os, sys
    from transformers import TrainerCallback
    from textonly.pipeline.train import TrainConfig, train

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
    # the killed segment counts with its time and memory up to step 3; its energy was never recorded
    killed_segment, last = json.loads((tmp_path / "killed" / "segments.json").read_text())
    assert (killed_segment["to_step"], killed_segment["energy"], last["from_step"]) == (3, None, 2)
    assert resumed["segments"] == 2 and resumed["energy"]["measured_segments"] == 1
    assert resumed["wall_seconds"] == pytest.approx(killed_segment["seconds"] + last["seconds"], abs=1e-3)
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
    accepted = {"B": 1, " C.": 2, "(A)": 0, "B)": 1, "D) red": 3, "A\n": 0, "Answer: B": 1, "answer: (C)": 2}
    assert {t: parse_letter(t, 4) for t in accepted} == accepted
    # prose that starts with a capital letter names no option; nor does a letter beyond the options
    rejected = ["", "A butterfly", "A\nbutterfly", "A red one", "The answer is B", "E", "b", "Bee", "(B", "B.5",
                "Answer:"]
    assert {t: parse_letter(t, 4) for t in rejected} == dict.fromkeys(rejected)


def test_mcnemar_exact():
    a = {f"q{i}": i < 12 for i in range(20)}
    b = {f"q{i}": 2 <= i < 14 for i in range(20)}  # 2 right only in a, 2 right only in b
    assert mcnemar(a, b) == {"n": 20, "a_only": 2, "b_only": 2, "p_value": 1.0}
    c = {f"q{i}": False for i in range(20)}
    result = mcnemar(a, c)  # 12 discordant, all one way: p = 2 / 2**12
    assert result["a_only"] == 12 and result["p_value"] == pytest.approx(2 / 2 ** 12)
    with pytest.raises(ValueError, match="different questions"):
        mcnemar(a, {"other": True})


class Stop(Exception):
    """An interruption that Python sees (a Ctrl-C, an out-of-memory error): the segment ends in order."""


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Stop(f"stopped at step {self.step}")


def _short(models, data, **changes):
    return TrainConfig(data=str(data), model=str(models["embedded"]), mode="image_text", batch_size=4,
                       max_steps=3, save_steps=1, **changes)


def test_a_resumed_run_reports_the_cost_of_all_its_segments(tiny_models, small_split, tmp_path):
    config = _short(tiny_models, small_split)
    with pytest.raises(Stop):
        train(config, tmp_path, callbacks=[StopAt(2)], progress=False)
    run = train(config, tmp_path, progress=False)
    first, second = json.loads((tmp_path / "segments.json").read_text())
    assert run["resumed_from"] == "checkpoint-1" and run["segments"] == 2 and run["steps"] == 3
    assert (first["to_step"], second["from_step"], second["to_step"]) == (2, 1, 3)
    # both segments ended in order, so both have their energy: time and energy are the sums, memory the max
    assert run["energy"]["measured_segments"] == 2
    assert run["wall_seconds"] == pytest.approx(first["seconds"] + second["seconds"], abs=1e-3)
    assert run["wall_seconds"] > second["energy"]["seconds"]
    assert run["energy"]["energy_kwh"] == pytest.approx(first["energy"]["energy_kwh"] + second["energy"]["energy_kwh"])
    assert run["peak_memory_mb"]["process_rss"] == max(first["peak_memory_mb"]["process_rss"],
                                                      second["peak_memory_mb"]["process_rss"])


def test_force_and_a_changed_fingerprint_start_anew(tiny_models, small_split, tmp_path, monkeypatch):
    import textonly.pipeline.train as training

    config = _short(tiny_models, small_split)
    # an unfinished run of other code (another fingerprint) with a checkpoint in the folder
    with monkeypatch.context() as patch:
        patch.setattr(training, "fingerprint", lambda config: "0123456789abcdef")
        with pytest.raises(Stop):
            train(config, tmp_path, callbacks=[StopAt(2)], progress=False)
    assert (tmp_path / "checkpoints" / "checkpoint-1").is_dir()
    with pytest.warns(UserWarning, match=r"starts anew \(its earlier run had another config, data, model or code\); deleting"):
        anew = train(config, tmp_path, progress=False)
    assert anew["resumed_from"] is None and anew["segments"] == 1 and anew["fingerprint"] != "0123456789abcdef"
    # force trains from scratch, not from the finished run's checkpoints, to the same result
    with pytest.warns(UserWarning, match=r"starts anew \(forced\)"):
        forced = train(config, tmp_path, progress=False, force=True)
    assert forced["resumed_from"] is None and forced["segments"] == 1 and forced["steps"] == 3
    assert forced["final_loss"] == pytest.approx(anew["final_loss"], abs=1e-5)


def test_each_phase_reports_its_own_peak_memory():
    """Two phases in one process: the second, which allocates far less, reports a lower peak
    (the process's lifetime maximum, ``ru_maxrss``, would give both the first one's)."""
    import time

    from textonly.core.memory import peak_memory

    with peak_memory() as big:
        block = torch.ones(256 * 2**20 // 4)  # 256 MB, written, so resident
        time.sleep(0.3)
        del block
    with peak_memory() as small:
        block = torch.ones(1024)
        time.sleep(0.3)
        del block
    assert big["process_rss"] - small["process_rss"] > 150


def test_a_qlora_adapter_is_evaluated_on_a_4bit_base(tiny_models, small_split, tmp_path, monkeypatch):
    import textonly.models.hub as hub

    config = TrainConfig(data=str(small_split), model=str(tiny_models["llava_next"]), mode="image_text",
                         batch_size=4, max_steps=1, quantization="4bit")
    train(config, tmp_path / "run", progress=False)
    loaded, hub_load = [], hub.load_model

    def spy(*args, **kwargs):
        model, processor = hub_load(*args, **kwargs)
        loaded.append((kwargs, model))
        return model, processor

    monkeypatch.setattr(hub, "load_model", spy)
    result = evaluate(EvalConfig(model=config.model, data=str(small_split), scoring="letter",
                                 adapter=str(tmp_path / "run"), batch_size=4), tmp_path / "eval", progress=False)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ((kwargs, model),) = loaded
    assert kwargs == {"quantization": "4bit", "device": device}
    # a layer without LoRA is bitsandbytes' own 4-bit layer
    assert type(model.model.language_model.layers[0].self_attn.k_proj).__name__ == "Linear4bit"
    assert (result["quantization"], result["device"]) == ("4bit", device)
