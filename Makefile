# Two commands: `make run` starts the back office, `make test` runs the whole suite (after `make lint`).
# Without DATABASE_URL / REDIS_URL both start an embedded PostgreSQL and Redis (data in .data/).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SVC    := $(BIN)/python -m backoffice.devservices
NAME   ?=

.PHONY: install run lint test bench services stop contracts clean otp

install: $(VENV)/.installed node_modules/.installed .data/.system-packages

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

# Debian packages the test suite needs: promtool (prometheus), headless Chromium and its driver for the
# browser tests. Installed once, as root or through sudo.
SYSTEM_PACKAGES := prometheus chromium chromium-driver
.data/.system-packages: Makefile
	@mkdir -p .data
	@if ! command -v promtool >/dev/null || ! command -v chromedriver >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing Debian packages: $(SYSTEM_PACKAGES)"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null; \
	fi
	@touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: install
	$(SVC) up

# ruff with the configuration in pyproject.toml ([tool.ruff]); needs no services, so it runs first and a
# lint error fails `make test` (and CI) before the suite starts.
lint: install
	$(BIN)/ruff check .

test: install lint
	$(SVC) run -- $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(SVC) run -- $(BIN)/python -m bench $(NAME)

services: install
	$(SVC) start

stop:
	$(SVC) stop

otp:
	@$(BIN)/python manage.py demo_otp

contracts: node_modules/.installed
	node chain/contracts/build.js

clean: stop
	rm -rf .data
