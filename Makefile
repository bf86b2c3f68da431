# `make train`: set up .venv and train the embedded default (configs/default.py).
# `make test`: set up .venv and run the whole test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/default
STAMP := $(VENV)/.installed

.PHONY: install train test lint clean

install: $(STAMP)

$(STAMP): setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

train: $(STAMP)
	$(PY) main.py --config=configs/default.py --workdir=$(WORKDIR)

# Test files run on all cores (-n auto): XLA compiles mostly on one thread per process.
test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadfile tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs
