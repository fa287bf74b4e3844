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

.PHONY: venv worlds base results book test bench cost-tokens cost-measure clean

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

# every step of the study not up to date (Snakemake, every core: workflow/Snakefile), each a notebook
# executed by papermill; the tables; the pages
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

# The cost chapter's committed inputs (book/measured/). cost-tokens needs the real images under
# ../shared/datasets (SHARED) and the embedded base model as the describer; cost-measure times
# training steps of that model on this machine (CPU: energy is an estimate).
SHARED ?= ../shared/datasets
DESCRIBER_MODEL ?= $(DATA)/models/base-small-seed0-f1
cost-tokens: venv
	test -d $(DESCRIBER_MODEL) || $(MAKE) base
	$(PY) -m textonly data from-folder $(SHARED)/butterflies-100/test --out $(DATA)/real/butterflies --seed 0
	$(PY) -m textonly convert --data $(SHARED)/k-viscuit --describer captioner --model $(DESCRIBER_MODEL) --out $(DATA)/real/k-viscuit-captioner
	$(PY) -m textonly convert --data $(DATA)/real/butterflies --describer captioner --model $(DESCRIBER_MODEL) --out $(DATA)/real/butterflies-captioner
	$(PY) -m textonly cost tokens --data k-viscuit=$(DATA)/real/k-viscuit-captioner \
	  --data butterflies=$(DATA)/real/butterflies-captioner --description captioner-$(notdir $(DESCRIBER_MODEL)) \
	  --out book/measured/cost_tokens.csv

# cost-measure writes both files to a temporary folder and moves them into book/measured at the
# end: a file written there first would change the tree and make the next one's provenance -dirty.
cost-measure: venv
	test -d $(DATA)/worlds || $(MAKE) worlds
	test -d $(DESCRIBER_MODEL) || $(MAKE) base
	tmp=$$(mktemp -d) && for world in wings heritage; do $(PY) -m textonly cost measure --model $(DESCRIBER_MODEL) \
	  --data $(DATA)/worlds/$$world/train --description oracle-full --device cpu --dtype float32 --samples 256 --warmup 8 \
	  --out $$tmp/measure_cpu_small_$$world.json || exit 1; done && mv $$tmp/measure_cpu_small_*.json book/measured/ \
	  && rmdir $$tmp

clean:
	rm -rf _build results .snakemake $(DATA)/worlds $(DATA)/models $(DATA)/study
