# Two entry points for a fresh machine: `make demo` (set up, run the baseline scenario)
# and `make test` (set up, run the whole test suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup clean bench

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 12), "Python 3.12+ needed (see .python-version)"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,cluster,notebooks]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/adsim run scenarios/baseline.toml --out runs/baseline-demo-$$(date +%Y%m%d-%H%M%S)

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py --full --out docs/performance.md

clean:
	rm -rf $(VENV) runs .pytest_cache
