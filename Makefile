# Two commands do all set-up on a fresh machine:
#   make demo   -> .venv, install, fetch data (npm), run the demo pipeline, print where the report is
#   make test   -> .venv, install, lint, run the default test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install lint clean-venv

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first (the local CPU build where one is provided), then the rest pinned to it so no CUDA build is pulled.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/stillroom demo --out artifacts/demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/lint-imports --no-cache

# -n auto: one pytest-xdist worker per core, one torch thread each (tests/conftest.py); at most 4, as every worker
# builds the session fixtures (a trained teacher) in its own memory; --dist loadfile keeps a file's module-scoped
# fixtures on one worker, so each is built once
test: lint
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadfile

clean-venv:
	rm -rf $(VENV)
