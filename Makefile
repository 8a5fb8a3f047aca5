# Two commands: `make report` and `make test`. Each creates .venv if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt
STAMP := $(VENV)/.installed

.PHONY: report test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -e '.[test,report]'
	touch $(STAMP)

report: $(STAMP)
	$(BIN)/flowscope report $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(PIP) -e '.[test,report,bench]'
	# torchcfm without its dependencies (lightning, torchvision, ...): the benchmark uses
	# its ConditionalFlowMatcher, which needs only torch, numpy and POT, and its data
	# generators (torchcfm.utils), which need torchdyn's moons (scikit-learn).
	$(PIP) --no-deps torchcfm torchdyn
	$(BIN)/flowscope bench $(ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
