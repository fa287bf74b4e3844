"""The command line: verbs listed, errors as one line with exit status 2 (never a traceback), choices
taken from the package's definitions."""

import importlib
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
from conftest import good_record, make_dataset

from textonly.cli.main import main
from textonly.cli.parser import build_parser


def run(*args):
    return subprocess.run([sys.executable, "-m", "textonly", *args], capture_output=True, text=True)


def test_help_lists_the_verbs():
    result = run("--help")
    assert result.returncode == 0
    for verb in ("worlds", "data"):
        assert verb in result.stdout
    data_help = run("data", "--help").stdout
    for action in ("check", "from-folder", "from-hub"):
        assert action in data_help


def test_data_check_prints_counts(tmp_path):
    root = make_dataset(tmp_path / "ds", [good_record(i) for i in range(3)])
    result = run("data", "check", str(root))
    assert result.returncode == 0
    assert "3 usable" in result.stdout and "Food" in result.stdout


def test_bad_dataset_is_one_line_not_a_traceback(tmp_path):
    root = make_dataset(tmp_path / "ds", [good_record(0, answer=7)])
    result = run("data", "check", str(root))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "answer index 7 out of range" in result.stderr


def test_worlds_build_rejects_bad_size(tmp_path):
    result = run("worlds", "build", "--out", str(tmp_path), "--image-size", "4")
    assert result.returncode == 2 and "error: --image-size 4" in result.stderr


def one_error_line(capsys) -> str:
    """The one line a failed command printed on stderr (and nothing else there)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def finished_evaluation(folder, correct: dict):
    """An evaluation directory as `evaluate` leaves it, as far as `compare` reads it."""
    folder.mkdir()
    (folder / "eval.json").write_text("{}")
    (folder / "predictions.jsonl").write_text("".join(json.dumps({"id_": k, "correct": v}) + "\n"
                                                      for k, v in correct.items()))
    return folder


@pytest.fixture
def datasets(tmp_path):
    """Datasets a command can refuse before it loads a model (the model named is never there)."""
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "annotations.jsonl").write_text("\n")
    return SimpleNamespace(
        empty=empty, model=str(tmp_path / "no-model"), out=str(tmp_path / "out"),
        plain=make_dataset(tmp_path / "plain", [good_record(i) for i in range(3)]),
        described=make_dataset(tmp_path / "described", [good_record(i, descriptions={"oracle-full": "A red square."})
                                                         for i in range(3)]),
        not_a_dataset=(tmp_path / "images-only"), missing=tmp_path / "missing")


def test_empty_dataset_is_one_line(datasets, capsys):
    for argv in (["train", "--mode", "image_text", "--model", datasets.model],
                 ["evaluate", "--model", datasets.model],
                 ["convert", "--describer", "oracle"]):
        assert main([*argv, "--data", str(datasets.empty), "--out", datasets.out]) == 2
        assert one_error_line(capsys) == f"error: {datasets.empty / 'annotations.jsonl'}: no questions"


def test_missing_or_invalid_data_folder_is_one_line(datasets, capsys):
    datasets.not_a_dataset.mkdir()
    for argv in (["train", "--mode", "text_only", "--model", datasets.model],
                 ["evaluate", "--model", datasets.model, "--condition", "description"],
                 ["convert", "--describer", "oracle"],
                 ["cost", "measure", "--description", "oracle-full", "--arch", "qwen2-vl-7b"]):
        assert main([*argv, "--data", str(datasets.missing), "--out", datasets.out]) == 2
        assert one_error_line(capsys).startswith(f"error: {datasets.missing}: no such dataset folder")
        if argv[0] in ("train", "evaluate"):
            assert main([*argv, "--data", str(datasets.not_a_dataset), "--out", datasets.out]) == 2
            assert "a dataset folder needs annotations.jsonl" in one_error_line(capsys)


def test_description_missing_is_one_line_before_any_model(datasets, capsys):
    evaluate = ["evaluate", "--model", datasets.model, "--out", datasets.out, "--condition", "description"]
    assert main([*evaluate, "--data", str(datasets.plain)]) == 2
    assert ("3 of 3 questions have no 'oracle-full' description (first: q0); descriptions there: none"
            in one_error_line(capsys))
    assert main([*evaluate, "--data", str(datasets.described), "--description", "captioner-x"]) == 2
    assert "no 'captioner-x' description" in (line := one_error_line(capsys)) and "there: oracle-full" in line
    train = ["train", "--model", datasets.model, "--out", datasets.out, "--data", str(datasets.described)]
    assert main([*train, "--mode", "mixed", "--description", "oracle-wrong"]) == 2
    assert "have no 'oracle-wrong' description" in one_error_line(capsys)


def test_compare_refuses_other_questions_and_unfinished_evaluations_in_one_line(tmp_path, capsys):
    a = finished_evaluation(tmp_path / "a", {"q0": True, "q1": False})
    b = finished_evaluation(tmp_path / "b", {"q0": True, "q2": False})
    assert main(["compare", str(a), str(b)]) == 2
    assert "the evaluations cover different questions (2 ids in one only)" in one_error_line(capsys)
    assert main(["compare", str(a), str(tmp_path)]) == 2
    assert one_error_line(capsys) == f"error: {tmp_path}: not a finished evaluation (no eval.json)"
    (b / "predictions.jsonl").unlink()
    assert main(["compare", str(a), str(b)]) == 2
    assert one_error_line(capsys) == f"error: {b / 'predictions.jsonl'}: No such file or directory"
    assert main(["compare", str(a), str(a)]) == 0
    assert "n=2" in capsys.readouterr().out


def test_a_count_below_one_is_refused_by_the_parser(datasets, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["evaluate", "--model", datasets.model, "--data", str(datasets.plain), "--out", datasets.out,
              "--batch-size", "0"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "argument --batch-size: '0' is not a whole number of at least 1" in err and "Traceback" not in err


def _extended(value):
    """The definition with one more name."""
    return {**value, "zz-new": next(iter(value.values()))} if isinstance(value, dict) else (*value, "zz-new")


@pytest.mark.parametrize("module, name, argv", [
    ("textonly.core.prompts", "CONDITIONS", "evaluate --model m --data d --out o --condition"),
    ("textonly.core.prompts", "SCORINGS", "evaluate --model m --data d --out o --scoring"),
    ("textonly.core.prompts", "ANSWER_FORMATS", "train --model m --data d --out o --mode text_only --answer-format"),
    ("textonly.core.prompts", "TRAIN_MODES", "train --model m --data d --out o --mode"),
    ("textonly.pipeline.train", "PRESETS", "train --model m --data d --out o --mode text_only --preset"),
    ("textonly.models.hub", "QUANTIZATIONS", "train --model m --data d --out o --mode text_only --quantization"),
    ("textonly.organism.worlds.vocab", "WORLDS", "worlds build --out o --world"),
    ("textonly.organism.vlm", "MODEL_SIZES", "pretrain --size"),
    ("textonly.organism.pretrain", "PRECISIONS", "pretrain --precision"),
    ("textonly.pipeline.describers", "DESCRIBERS", "convert --data d --out o --describer"),
    ("textonly.organism.worlds.text", "QUALITIES", "convert --data d --out o --describer oracle --quality"),
    ("textonly.cost.flops", "COST_MODES", "cost measure --data d --description x --out o --modes"),
    ("textonly.cost.measure", "DTYPES", "cost measure --data d --description x --out o --dtype"),
    ("textonly.models.architectures", "ARCHITECTURES", "cost tokens --data n=d --description x --out o --arch"),
])
def test_choices_are_the_package_definitions(monkeypatch, module, name, argv):
    """A name added to the definition is accepted by the command line: the choices are not retyped."""
    definition = importlib.import_module(module)
    monkeypatch.setattr(definition, name, _extended(getattr(definition, name)))
    args = build_parser().parse_args([*argv.split(), "zz-new"])
    chosen = vars(args)[argv.split()[-1].lstrip("-").replace("-", "_")]
    assert chosen in ("zz-new", ["zz-new"])


def test_a_data_check_does_not_import_torch(tmp_path):
    """Each verb adds its own arguments: a light verb does not import the heavy stages for their choices."""
    root = make_dataset(tmp_path / "ds", [good_record(i) for i in range(2)])
    code = (f"import sys; from textonly.cli.main import main; assert main(['data', 'check', {str(root)!r}]) == 0; "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip().splitlines()[-1] == "False", result.stderr


def test_the_python_api_refuses_what_the_cli_refuses(datasets, tmp_path):
    # a notebook calls the functions, not the CLI: the same mistakes are one clear TextonlyError
    from textonly.core.errors import TextonlyError
    from textonly.pipeline.evaluate import EvalConfig, compare, evaluate
    from textonly.pipeline.train import TrainConfig, train

    datasets.not_a_dataset.mkdir()
    with pytest.raises(TextonlyError, match="annotations.jsonl"):  # before the folder is hashed
        train(TrainConfig(data=str(datasets.not_a_dataset), model=datasets.model, mode="image_text"), tmp_path / "r")
    with pytest.raises(TextonlyError, match="annotations.jsonl"):
        evaluate(EvalConfig(model=datasets.model, data=str(datasets.not_a_dataset)), tmp_path / "e")
    with pytest.raises(TextonlyError, match="--batch-size 0"):
        EvalConfig(model=datasets.model, data=str(datasets.plain), batch_size=0).validate()
    finished_evaluation(tmp_path / "a", {"q0": True, "q1": False})
    finished_evaluation(tmp_path / "b", {"q0": True, "q2": False})
    with pytest.raises(TextonlyError, match="same questions|question"):
        compare(tmp_path / "a", tmp_path / "b")


def test_train_force_reaches_the_training(datasets, monkeypatch):
    calls = []

    def fake_train(config, out, *, force=False, **_):
        calls.append(force)
        return {"steps": 1, "final_loss": 0.0, "wall_seconds": 0.0, "tokens": {"text": 1, "image": 0}}

    monkeypatch.setattr("textonly.pipeline.train.train", fake_train)
    argv = ["train", "--mode", "image_text", "--model", datasets.model, "--data", str(datasets.plain),
            "--out", datasets.out]
    assert main(argv) == 0 and main([*argv, "--force"]) == 0
    assert calls == [False, True]


def test_the_default_description_is_the_oracle_at_full_quality():
    from textonly.core.prompts import DEFAULT_DESCRIPTION
    from textonly.organism.worlds.text import oracle_description

    assert DEFAULT_DESCRIPTION == oracle_description("full")
