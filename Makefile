# The two set-up commands are `make demo` and `make test`; everything else is a helper.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEBIAN_PACKAGES := docker-registry skopeo umoci chromium

.PHONY: demo test lint format typecheck contracts pytest bench debian-deps venv clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (Python >= 3.11)"; exit 2; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# Debian packages the tests and benchmarks start for real (registry, peer client, browser).
debian-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: $(STAMP)
	$(VENV)/bin/conveyor demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy

contracts: $(STAMP)
	$(VENV)/bin/lint-imports

pytest: $(STAMP) debian-deps
	$(PY) -m pytest -n 2 -q

test: lint typecheck contracts pytest

# Every benchmark, one after another (each also runs on its own: $(PY) benchmarks/NAME.py).
BENCHMARKS := startup copy blobio layout ledger latency promote server admission lint hadolint tokens
bench: $(STAMP) debian-deps
	@set -e; for b in $(BENCHMARKS) $(EXTRA_BENCHMARKS); do \
	  echo "== benchmarks/$$b.py"; $(PY) benchmarks/$$b.py; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
