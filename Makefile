# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv if missing and install vidnas with the tested torch pair (constraints.txt).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vidnas-installed
# openvino: its tests run in CI (a 59 MB wheel, measured 2.6 s to install from a warm pip cache)
EXTRAS ?= dev,pretrained,ray,openvino
# pytest-xdist workers of `make test` (auto: one per CPU core); --dist loadfile keeps a file on one worker, so its
# module fixtures are built once and tests of one file never run at the same time; --no-loadscope-reorder keeps the
# collection order, where tests/conftest.py puts the files with `slow` tests first
WORKERS ?= auto
# The installer: uv when it installs from PyPI (about 3x faster than pip on a fresh machine: parallel downloads,
# unpacking and bytecode compilation), else pip. uv gets pip's package sources (index-url, extra-index-url,
# find-links, constraint of `pip config list`, environment included), so both install the same. Both compile the
# packages' bytecode at install time: where PYTHONDONTWRITEBYTECODE is set (as on this project's machines) nothing
# else ever writes it, and every fresh interpreter would compile torch, timm and the rest again (11 s instead of 5 s
# to import them; the test suite starts dozens: xdist workers, torchrun ranks, Ray actors, pool workers).
UV := $(VENV)/bin/uv
define UV_SOURCES
import shlex, subprocess, sys
out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
flags = {"index-url": "--index-url", "extra-index-url": "--extra-index-url", "find-links": "--find-links",
         "constraint": "--constraint"}
found = {}
for line in out.splitlines():
    key, _, value = line.partition("=")
    scope, _, name = key.partition(".")
    if name in flags and (scope == ":env:" or name not in found):
        found[name] = shlex.split(value)[0].split() if value else []
print(" ".join(f"{flags[n]} {shlex.quote(v)}" for n in flags for v in found.get(n, [])))
endef
export UV_SOURCES

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	if $(PY) -m pip install --quiet uv && $(UV) pip install --quiet --compile-bytecode --python $(PY) \
	    --index-strategy unsafe-best-match $$($(PY) -c "$$UV_SOURCES") -c constraints.txt -e '.[$(EXTRAS)]'; then :; else \
	  echo "uv unavailable or failed: installing with pip"; \
	  $(PY) -m pip install --quiet --upgrade pip && $(PY) -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'; \
	fi
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vidnas demo

test: $(STAMP)
	$(PY) -m compileall -q src tests  # this checkout's bytecode, for the same reason (stale files are recompiled)
	$(PY) -m pytest -q -n $(WORKERS) --dist loadfile --no-loadscope-reorder --durations=20

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/table1.py

clean:
	rm -rf $(VENV) runs .pytest_cache
