# Two commands for a fresh clone (README): `make run` and `make test`. Both create .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SC_FAST_DATA ?= ../shared/data
export SC_FAST_DATA

.PHONY: run test bench-test venv clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

run: venv  ## the main job: time-to-target trials (CPU profile without a GPU)
	$(BIN)/python -m bench run $(ARGS)

test: venv  ## the test suite (benchmarks run once each, untimed)
	$(BIN)/python -m pytest $(ARGS)

bench-test: venv  ## pytest-benchmark: timed, saved for --benchmark-compare
	$(BIN)/python -m pytest tests/benchmarks --benchmark-enable --benchmark-autosave $(ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .benchmarks
