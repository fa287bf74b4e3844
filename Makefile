# The study's entry points. `make book` and `make test` are the README's two commands;
# both create (or reuse) the virtual environment in $(VENV) first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned here (a CPU build); a CUDA user installs the CUDA build of the same
# version first, or passes CONSTRAINTS=their-file (see the README).
CONSTRAINTS ?= constraints.txt
DATA ?= data
PYTEST_ARGS ?=
# the study `make results` runs, and its profile: smoke (minutes), default (the main job), full
STUDY ?= studies/main.yaml
PROFILE ?= default

.PHONY: venv worlds base results book test bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e .
	touch $@

worlds: venv
	$(PY) -m textonly worlds build --out $(DATA)/worlds

base: worlds
	$(PY) -m textonly pretrain --size small --worlds $(DATA)/worlds --out $(DATA)/models/base-small-seed0-f1

# every notebook of the study not up to date, executed by papermill; the tables; the pages
results: venv
	$(PY) -m textonly study run --config $(STUDY) --profile $(PROFILE)

book: results
	$(VENV)/bin/jupyter-book build . --quiet
	@echo "book: $(CURDIR)/_build/html/index.html"

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

bench: venv
	$(PY) benchmarks/worlds.py
	$(PY) benchmarks/pretrain.py --worlds $(DATA)/worlds

clean:
	rm -rf _build results $(DATA)/worlds $(DATA)/models $(DATA)/study
