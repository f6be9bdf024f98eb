# `make demo` and `make test` each set up .venv on first use, then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench learning clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: on CPU machines this takes the local CPU wheel, on GPU machines the
	# CUDA build; the package's open torch range is then already satisfied.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

# Online learning at a glance: the shipped ViDT model (pretrained on odt/hopper-medium-replay,
# critics warmed up) finetuned for 20k steps in Hopper-v5; `odt run --preset cpu-vidt` is the
# whole pipeline that made it.
demo: $(STAMP)
	$(VENV)/bin/odt finetune --init odt:cpu-vidt --preset cpu-vidt

test: $(STAMP)
	$(PY) -m pytest -n 2 --timeout 900

test-fast: $(STAMP)
	$(PY) -m pytest -n 2 -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/speed.py
	$(PY) benchmarks/peer.py

learning: $(STAMP)
	$(PY) benchmarks/learning.py

clean:
	rm -rf $(VENV) runs .pytest_cache
