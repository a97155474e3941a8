# One task runner for everything. `make demo` and `make test` are the README's two commands: both
# set everything up first (a virtualenv with pinned packages, buf from npm), so they work on a fresh
# machine with nothing installed by hand. requirements/*.txt pin the direct dependencies;
# requirements/lock.txt pins every transitive one (`make lock` refreshes it).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
export PATH := $(CURDIR)/$(BIN):$(CURDIR)/node_modules/.bin:$(PATH)
PYTEST_WORKERS ?= 2

.PHONY: lock setup gateway gen check-gen lint test test-unit test-integration bench demo serve clean

setup: $(STAMP) node_modules/.stamp sdk_node/node_modules/.stamp gateway

$(STAMP): requirements/lock.txt requirements/base.txt requirements/dev.txt server/pyproject.toml sdk_python/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements/dev.txt -c requirements/lock.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e server -e sdk_python
	touch $(STAMP)

node_modules/.stamp: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch node_modules/.stamp

# The Node SDK's own packages (its generator plugin, TypeScript, its test runner).
sdk_node/node_modules/.stamp: sdk_node/package.json sdk_node/package-lock.json
	cd sdk_node && npm ci --no-audit --no-fund --loglevel=error
	touch sdk_node/node_modules/.stamp

# The REST bridge: pinned Go protoc plugins in .tools/go/bin, then gateway/bin/mintleaf-gateway
# (both steps skip themselves when up to date).
gateway:
	bash scripts/go_tools.sh
	bash scripts/build_gateway.sh

lock: setup
	$(BIN)/python -m pip freeze --exclude-editable > requirements/lock.txt

gen: setup
	bash scripts/gen.sh
	bash scripts/gen_node.sh
	bash scripts/gen_go.sh

check-gen: setup
	bash scripts/gen.sh --check
	bash scripts/gen_node.sh --check
	bash scripts/gen_go.sh --check

lint: setup
	buf lint
	bash scripts/gen.sh --check
	bash scripts/gen_node.sh --check
	bash scripts/gen_go.sh --check
	npm --prefix sdk_node run --silent build
	cd gateway && PATH="$$PATH:/usr/local/go/bin" go vet ./...
	test -z "$$(cd gateway && PATH="$$PATH:/usr/local/go/bin" gofmt -l .)"
	$(BIN)/ruff check server/mintleaf_server sdk_python/mintleaf tests bench scripts
	$(BIN)/ruff format --check server/mintleaf_server sdk_python/mintleaf tests bench scripts
	$(BIN)/mypy

# The whole suite: lint, then every test tier in parallel (xdist), slow fault tests included.
test: lint
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup -q

test-unit: setup
	$(BIN)/python -m pytest tests/unit -q

test-integration: setup
	$(BIN)/python -m pytest tests/integration -q

bench: setup
	$(BIN)/python bench/run_all.py

# Starts the embedded server and runs the quick start against it.
demo: setup
	$(BIN)/python scripts/demo.py

serve: setup
	$(BIN)/mintleaf-server serve

clean:
	rm -rf $(VENV) node_modules sdk_node/node_modules gateway/bin .tools sdk_node/dist .pytest_cache .ruff_cache .mypy_cache
