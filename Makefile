# One command runs the same checks locally and in CI: `make verify`.
# Every target installs what it needs (uv included) on a fresh machine.

SHELL := /bin/bash
.DEFAULT_GOAL := help

export UV_PYTHON_DOWNLOADS := never
export UV_LINK_MODE := copy
export NO_MKDOCS_2_WARNING := 1
# pip --user puts programs under Python's user base: ~/.local on Linux,
# ~/Library/Python/3.X on a macOS framework build.
# (site.getuserbase(), not `python3 -m site --user-base`, which exits 1 in a venv.)
USER_BASE := $(or $(shell python3 -c 'import site; print(site.getuserbase())' 2>/dev/null),$(HOME)/.local)
UV := $(shell command -v uv 2>/dev/null || echo $(USER_BASE)/bin/uv)
RUN := $(UV) run --frozen
# Test processes (pytest-xdist): every process has its own database and key prefix.
TEST_WORKERS ?= 2
PYTEST := $(RUN) pytest -n $(TEST_WORKERS)

.PHONY: help
help:  ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

# --force-reinstall: a package left without its binary (an install interrupted after
# the package was written) would otherwise count as installed and stay broken.
$(USER_BASE)/bin/uv:
	python3 -m pip install --user --quiet --disable-pip-version-check --force-reinstall uv \
	  || python3 -m pip install --user --quiet --disable-pip-version-check \
	       --force-reinstall --break-system-packages uv

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen
	@touch $@

.PHONY: install
install: .venv/.synced  ## Create .venv with the locked dependencies

.PHONY: run
run: install  ## Run the embedded service (API, worker, scheduler) on 127.0.0.1:8000
	$(RUN) jobsctl run

.PHONY: test
test: install  ## The whole test suite (unit, integration, e2e)
	$(PYTEST)

.PHONY: test-unit
test-unit: install  ## Unit tests only (no services needed)
	$(PYTEST) tests/unit

.PHONY: test-integration
test-integration: install  ## Integration and end-to-end tests (PostgreSQL and Redis)
	$(PYTEST) tests/integration tests/e2e

.PHONY: lint
lint: install  ## ruff check and format check
	$(RUN) ruff check src tests benchmarks tools
	$(RUN) ruff format --check src tests benchmarks tools

.PHONY: format
format: install  ## Apply ruff's fixes and formatting
	$(RUN) ruff check --fix src tests benchmarks tools
	$(RUN) ruff format src tests benchmarks tools

.PHONY: typecheck
typecheck: install  ## mypy --strict on src/
	$(RUN) mypy

.PHONY: docs
docs: install  ## Build the docs site into site/ (strict)
	$(RUN) mkdocs build --strict

.PHONY: docs-serve
docs-serve: install  ## Serve the docs with live reload
	$(RUN) mkdocs serve

# Known vulnerabilities `make audit` accepts, each with its reason and when to look again.
# None today. Example:
#   AUDIT_IGNORE += --ignore-vuln GHSA-xxxx-xxxx-xxxx  # dev-only tool, not shipped; recheck 2027-01
AUDIT_IGNORE :=

.PHONY: audit
audit: install  ## Known vulnerabilities in uv.lock (pip-audit; AUDIT_STRICT=1: fail if unreachable)
	UV=$(UV) $(RUN) python tools/audit_dependencies.py $(AUDIT_IGNORE) $(if $(AUDIT_STRICT),--strict)

.PHONY: check-containers
check-containers: install  ## Lint the Dockerfile (hadolint) and check compose.dev.yml, offline
	$(RUN) python -m tools.check_containers

.PHONY: verify
verify: lint typecheck check-containers test docs audit  ## Everything CI checks

.PHONY: migrate
migrate: install  ## Upgrade the database named by JOBS_DATABASE_URL
	$(RUN) jobsctl migrate

.PHONY: clean
clean:  ## Remove build artefacts and the embedded database
	rm -rf site .mypy_cache .ruff_cache .pytest_cache var

# BENCH_QUICK=1: smoke run (small sizes, one repetition); BENCH_ONLY=w2,w3: some workloads;
# BENCH_STRICT=1: exit 1 when a target fails.
.PHONY: bench
bench: install  ## Issue 7's targets W1-W5 and footprint, PASS/FAIL vs in-run baselines (<= 20 min)
	$(RUN) python -m benchmarks.suite $(if $(BENCH_QUICK),--quick) \
	  $(if $(BENCH_ONLY),--only $(BENCH_ONLY)) $(if $(BENCH_STRICT),--strict)

.PHONY: chaos
chaos: install  ## Failure scenarios against real processes (200 runs each): lost / duplicated table
	$(RUN) python -m tests.chaos

# The development stack (docs/development.md). DEV_SERVICES="postgres redis": only what
# the test suite needs; SERVICE=worker: the container dev-shell and dev-logs look at.
COMPOSE := docker compose -f compose.dev.yml
DEV_SERVICES :=
SERVICE :=

.PHONY: dev-up
dev-up:  ## Build and start the dev stack (Docker), wait until healthy; DEV_SERVICES= some
	$(COMPOSE) up --detach --build --wait $(DEV_SERVICES)

.PHONY: dev-down
dev-down:  ## Stop the dev stack (its data stays in named volumes)
	$(COMPOSE) down

.PHONY: dev-shell
dev-shell:  ## A shell in the running api container (SERVICE=worker: another one)
	$(COMPOSE) exec $(or $(SERVICE),api) bash

.PHONY: dev-logs
dev-logs:  ## Follow the dev stack's logs (SERVICE=api: one service)
	$(COMPOSE) logs --follow --tail=200 $(SERVICE)

.PHONY: dev-watch
dev-watch:  ## Restart api, worker and scheduler on edits to src/; rebuild on uv.lock
	$(COMPOSE) watch
