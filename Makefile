# Two commands: `make demo` and `make test`. Each creates .venv on first use and reuses it afterwards.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SAMPLE := shards/sample
DEMO := runs/demo
export PYTHONHASHSEED := 0

.PHONY: demo test lint format bench venv clean-demo

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

$(SAMPLE)/manifest.json: | $(STAMP)
	$(BIN)/ssl-benthic make-sample --out $(SAMPLE)

demo: $(STAMP) $(SAMPLE)/manifest.json
	$(BIN)/ssl-benthic verify-shards $(SAMPLE)
	$(BIN)/ssl-benthic summary $(SAMPLE)

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP) $(SAMPLE)/manifest.json
	$(BIN)/python bench/shards.py

clean-demo:
	rm -rf $(DEMO)
