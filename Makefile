# `make train`: set up .venv and train the embedded default (configs/default.py).
# `make test`: set up .venv and run the whole test suite.
# `make test-sweep-db`: install PostgreSQL if missing (root with apt) and run the sweep tests on a
# real database (they start and stop a throw-away cluster of their own).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/default
STAMP := $(VENV)/.installed

.PHONY: install train test test-sweep-db lint clean

install: $(STAMP)

$(STAMP): setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

train: $(STAMP)
	$(PY) main.py --config=configs/default.py --workdir=$(WORKDIR)

# Test files run on all cores (-n auto): XLA compiles mostly on one thread per process. The 15
# slowest tests are listed at the end, to keep the suite near its 12-minute CI budget.
test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadfile --durations=15 tests

test-sweep-db: $(STAMP)
	bash .ci/install_postgres
	$(PY) -m pytest -q -rs tests/test_sweep_postgres.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs
