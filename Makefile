# The two front doors: `make quickstart` (train -> search -> export on the bundled sample) and `make test`.
# Both create .venv and install fastnas into it first (pip; torch wheels from the machine's index).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup quickstart quickstart-imagenette test bench clean
setup: $(VENV)/.installed
$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

quickstart: setup
	$(PY) -m fastnas.quickstart

quickstart-imagenette: setup
	$(PY) -m fastnas.quickstart --config configs/quickstart_imagenette.yaml

test: setup
	$(PY) -m pytest -q tests

clean:
	rm -rf runs .pytest_cache
