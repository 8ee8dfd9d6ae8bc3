# The two commands of the README: `make demo` and `make test`.
# Both create .venv on first use (torch first, then fairseq-fixed without
# build isolation, as its C++ extensions build against the installed torch).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST := OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest

.PHONY: venv demo test test-slow bench compare

venv: $(STAMP)

$(STAMP): requirements.txt setup.py
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found: install Python 3.11 or pass PYTHON=..." >&2; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $$(grep -E '^(torch|numpy|cython|setuptools|wheel)\b' requirements.txt)
	$(BIN)/pip install -q --no-build-isolation -r requirements.txt
	$(BIN)/pip install -q --no-build-isolation --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	bash scripts/demo.sh

test: $(STAMP)
	$(PYTEST) -q -m "not slow" tests

test-slow: $(STAMP)
	$(PYTEST) -q -m slow tests || [ $$? -eq 5 ]  # exit 5: no test is marked slow

bench: $(STAMP)
	$(BIN)/python scripts/benchmarks/bench_attention.py --quick
	$(BIN)/python scripts/benchmarks/bench_generate.py --quick

compare: $(STAMP)
	$(BIN)/python scripts/compare.py $(COMPARE_ARGS)
