# Two commands set up a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEMO   := demo

.PHONY: demo test lint bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[test]'
	touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	rm -rf $(DEMO)
	$(VENV)/bin/imagenet-prep fake --out $(DEMO)/archives --classes 10 --train-per-class 40 \
		--val-per-class 5 --test 20 --size 250x188
	$(VENV)/bin/imagenet-prep verify --archives $(DEMO)/archives
	$(VENV)/bin/imagenet-prep prepare --archives $(DEMO)/archives --out $(DEMO)/dataset \
		--only all --train-shards 8 --val-shards 2 --wds --wds-shard-samples 100 --tfds
	$(VENV)/bin/imagenet-prep check $(DEMO)/dataset
	@$(PY) -m imagenet_prep.cli.print_tree $(DEMO)/dataset

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check src tests benchmarks

test: $(VENV)/.installed-test lint
	$(VENV)/bin/pytest -q

$(VENV)/.installed-bench: $(VENV)/.installed-test
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

bench: $(VENV)/.installed-bench
	$(PY) benchmarks/run.py

clean:
	rm -rf $(DEMO) .pytest_cache build *.egg-info
