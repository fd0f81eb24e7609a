# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0

.PHONY: run test lint install install-test clean gpu-wheels

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# A user who already has a CUDA build of torch in the venv keeps it; otherwise the pinned CPU build is installed.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet $(TORCH_PIN)
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

run: install
	$(BIN)/iclab reproduce von-oswald --scale smoke --device cpu --out runs/make-run --force

test: install-test
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -n auto -q --durations=10; rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

lint: install-test
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# For scripts/gpu_check.sh: the pure-Python dependencies a GPU image with torch may lack, as wheels in .whl/.
gpu-wheels: install
	$(BIN)/pip download --quiet --no-deps --only-binary=:all: -d .whl \
		$$($(BIN)/pip list --format=freeze | grep -iE '^(tyro|docstring.parser|typeguard|typing.extensions)==')

clean:
	rm -rf $(VENV) runs
