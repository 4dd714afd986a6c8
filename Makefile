# One-command entry points. `make demo` and `make test` set up .venv/ first when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast lint format docs bench compare spurious

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup  ## offline end-to-end demo on the embedded synthetic corpus
	$(PY) -m fvae_asr demo --out demo_out

# pytest-xdist workers for make test and make test-fast (one torch thread each: tests/conftest.py)
TEST_WORKERS ?= 2

# The browser check (tests/docs/test_site_in_browser.py) opens the site that the docs target has just built.
test: setup lint docs  ## lint, the docs build (strict) and the whole test suite, slow end-to-end tests included
	FVAE_ASR_BUILT_SITE=$(CURDIR)/site $(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

test-fast: setup  ## the tests that train nothing end to end (no e2e or slow mark): a contributor's loop
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m "not slow and not e2e"

lint: setup  ## ruff (lint, format check) and pymarkdownlnt on the README and docs/ (configured in pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pymarkdown scan -r README.md docs

format: setup  ## ruff: fix what the linter can and format the code
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

docs: setup  ## the documentation site from docs/ into site/; broken links and missing references fail
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir site

bench: setup  ## adapter speed: FVAE-LoRA vs an authors'-style implementation vs LoRA, whole model
	$(PY) -m benchmarks.speed.adapter_speed --threads 1 --clock cpu

compare: setup  ## frozen / LoRA / FVAE-LoRA / full (+ ablations), tuned learning rates, 2 shifts x 2 target settings
	$(PY) -m benchmarks.compare --out docs/compare --work results/compare --jobs 2

spurious: setup  ## spurious correlations in audio: 4 words, noise colour correlated 90% in training, group-balanced test
	$(PY) -m benchmarks.spurious --out docs/spurious --work results/spurious --jobs 2
