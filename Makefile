# genrec — set-up, tests and the end-to-end demo. Every target creates .venv itself.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH_SPEC ?= torch==2.13.0
DEMO_DIR ?= runs/demo

.PHONY: setup test test-all demo lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# CPU torch first: on this machine kind `torch==2.13.0` is a local CPU build; an open range
	# with no torch installed would pull a multi-GB CUDA build. Override TORCH_SPEC elsewhere.
	$(PIP) install --quiet "$(TORCH_SPEC)"
	$(PIP) install --quiet "$(TORCH_SPEC)" -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not integration"

test-all: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "integration or not integration"

demo: setup
	$(VENV)/bin/genrec demo --out $(DEMO_DIR)

lint: setup
	$(VENV)/bin/ruff check genrec tests bench
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) runs .pytest_cache
