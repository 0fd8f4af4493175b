# The two commands of the README: `make run` and `make test`. Both create .venv if missing and install
# every workspace member editable plus the pinned dev dependencies (requirements-dev.txt).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# the core, every plugin, and the example third-party plugin (so its tests and the conformance kit cover it)
MEMBERS := packages/t2i-core $(wildcard plugins/t2i-*) examples/t2i-plugin-example
STAMP := $(VENV)/.t2i-installed
PYTEST_ARGS ?=
# test processes (pytest-xdist); 0 runs the suite in this one process
TEST_WORKERS ?= 2

.PHONY: install run test bench clean docs browser

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

test: install browser
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# The t2i demo's browser test drives Debian's chromium + chromium-driver. Installed here when missing and
# possible (apt-get, as root or with password-less sudo); otherwise one line says that test will be skipped.
APT_BROWSER := apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then echo "make: no apt-get to install chromium + chromium-driver: the demo's browser test will be skipped"; \
	elif [ "$$(id -u)" = 0 ]; then $(APT_BROWSER) || echo "make: installing chromium failed: the demo's browser test will be skipped"; \
	elif sudo -n true 2>/dev/null; then sudo -n sh -c '$(APT_BROWSER)' || echo "make: installing chromium failed: the demo's browser test will be skipped"; \
	else echo "make: chromium + chromium-driver missing and not root (no password-less sudo): the demo's browser test will be skipped"; fi

bench: install
	$(PY) benchmarks/engine_overhead.py

clean:
	rm -rf $(VENV)

docs: install
	$(VENV)/bin/mkdocs serve
