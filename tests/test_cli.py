"""The command line: verbs listed, errors as one line with exit status 2."""

import subprocess
import sys

from conftest import good_record, make_dataset


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
