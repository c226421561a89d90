# Two commands: `make demo` and `make test` (`make test-slurm`: the SLURM scripts on a local cluster). Each creates .venv on first use and reuses it afterwards.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SAMPLE := shards/sample
DEMO := runs/demo
export PYTHONHASHSEED := 0

.PHONY: demo test test-slurm lint format bench venv clean-demo

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

$(SAMPLE)/manifest.json: | $(STAMP)
	$(BIN)/ssl-benthic make-sample --out $(SAMPLE)

# The demo: sample -> verify -> BYOL pretraining (a few minutes on CPU) -> export -> comparison of the
# export against random init (and ImageNet when a weights file is configured). The sample is made once;
# pretraining resumes an interrupted run to its step budget (and does nothing when the run is complete);
# the export is remade only when the checkpoint is newer; the comparison reruns only missing cells.
# `make clean-demo` starts over. HF_HUB_OFFLINE=0 lets the ImageNet start try the hub.
HF_HUB_OFFLINE ?= 1
export HF_HUB_OFFLINE

DEMO_MODEL = $(DEMO)/compare/runs/byol-linear-mcloss-s0/model.ckpt
RESUME_DEMO = $(if $(wildcard $(DEMO)/byol/checkpoints/*.ckpt),--resume last)

$(DEMO)/byol/export/backbone.json: $(DEMO)/byol/checkpoints/last.ckpt
	$(BIN)/ssl-benthic export $< --out $(DEMO)/byol/export --overwrite

demo: $(STAMP) $(SAMPLE)/manifest.json
	$(BIN)/ssl-benthic verify-shards $(SAMPLE)
	$(BIN)/ssl-benthic summary $(SAMPLE)
	$(BIN)/ssl-benthic pretrain --config configs/pretrain/byol_sample.yaml output_dir=$(DEMO)/byol $(RESUME_DEMO)
	$(MAKE) --no-print-directory $(DEMO)/byol/export/backbone.json
	$(BIN)/hml-finetune compare --config configs/finetune/compare_sample.yaml output_dir=$(DEMO)/compare
	$(BIN)/hml-finetune predict --checkpoint $(DEMO_MODEL) --shards $(SAMPLE)/test \
		--out $(DEMO)/predictions.csv --overwrite --num-workers 0
	@echo
	@echo "sample shards:      $(SAMPLE)/"
	@echo "BYOL run and logs:  $(DEMO)/byol/  (checkpoints/, logs/, tensorboard/)"
	@echo "BYOL export:        $(DEMO)/byol/export/  (backbone.safetensors + backbone.json)"
	@echo "comparison report:  $(DEMO)/compare/report.md"
	@echo "predictions:        $(DEMO)/predictions.csv  (the test split, by $(DEMO_MODEL))"

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

# The sbatch scripts as real jobs on a one-node SLURM cluster that slurm/local_cluster.sh starts (and
# stops) on this machine: installs slurm-wlm and munge with apt-get when missing (needs root).
test-slurm: $(STAMP)
	SSL_BENTHIC_SLURM=start $(BIN)/python -m pytest -q -m slurm tests/slurm

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The quick benchmarks (minutes). The long ones have their own commands: see bench/README.md.
bench: $(STAMP) $(SAMPLE)/manifest.json
	$(BIN)/python bench/constraint.py --out bench/results/constraint.md
	$(BIN)/python bench/shards.py --shards $(SAMPLE)/unlabelled --out bench/results/shards.md
	$(BIN)/python bench/linear_probe_cache.py
	$(BIN)/python bench/ssl_throughput.py
	$(BIN)/python bench/sharding.py --images 1000 --repeat 3 --out bench/results/sharding.md

clean-demo:
	rm -rf $(DEMO)
