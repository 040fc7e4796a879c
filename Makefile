# kolray: two commands on a fresh machine.
#   make demo   - create .venv, install, run the whole pipeline on the chain twin and serve it
#   make test   - create .venv, install, run the test suite
#   make docs   - build the documentation site into site/ (mkdocs build --strict)
# Torch: by default the CPU build this machine has (torch==2.13.0). For a CUDA build:
#   make TORCH_INDEX=https://download.pytorch.org/whl/cu128 install

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
STAMP := $(VENV)/.kolray-installed
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: install system-packages test demo lint format docs bench clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "kolray needs Python >= 3.11, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip wheel
	$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,docs]'
	@touch $@

install: $(STAMP)

# Chromium (the UI's browser tests) comes from the system's packages: installed where this user may
# (root or sudo, apt-get), else a line says what it costs.
system-packages:
	@scripts/system-packages browser

test: $(STAMP)
	@scripts/system-packages browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/kolray demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy bench  # apart: bench/ and jobs/ both have an analyze.py

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The site from docs/ and mkdocs.yml; --strict turns every warning (a broken link or anchor) into a failure.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

bench: $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache test-artifacts site
