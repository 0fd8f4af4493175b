# The two commands of the README: `make run` and `make test`. Both create .venv if missing and install
# every workspace member editable plus the pinned dev dependencies (requirements-dev.txt).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# the core, every plugin, and the example third-party plugin (so its tests and the conformance kit cover it)
MEMBERS := packages/t2i-core $(wildcard plugins/t2i-*) examples/t2i-plugin-example
STAMP := $(VENV)/.t2i-installed
PYTEST_ARGS ?=

.PHONY: install run test bench clean docs

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) requirements-dev.txt $(foreach m,$(MEMBERS),$(m)/pyproject.toml)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation $(foreach m,$(MEMBERS),-e $(m))
	$(PY) -m pip check
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/t2i run $(ARGS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/engine_overhead.py

clean:
	rm -rf $(VENV)

docs: install
	$(VENV)/bin/mkdocs serve
