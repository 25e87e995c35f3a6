# Two commands: `make run` (set up, run the demo job) and `make test` (set up, run the tests).
# Everything they need is installed here, so a fresh clone works with nothing done by hand.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
JOB    ?= jobs/demo.toml

.PHONY: run test test-slow setup system-deps bench-setup lint clean

run: setup
	$(PY) -m pipeline run $(JOB)

test: setup system-deps
	@$(PY) -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

test-slow: setup system-deps
	$(PY) -m pytest -m slow

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

# Servers the tests start for real: PostgreSQL (fetch sql) and Chromium (the report page).
system-deps:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1 || { \
	  echo "installing PostgreSQL and Chromium from Debian's packages"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends postgresql chromium >/dev/null; }

# Peers the benchmarks compare against (never needed by the pipeline itself).
bench-setup: setup
	$(PY) -m pip install --quiet -e '.[dev,bench]'

lint: setup
	$(PY) -m ruff check pipeline tests benchmarks

clean:
	rm -rf out .pytest_cache
