# Store Monitor. `make run` serves on the embedded SQLite with the bundled sample;
# `make test` sets up and runs every check. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: run run-prod test test-fast lint format bench bench-scaleout clean

$(BIN)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

# The browser tests drive Debian's Chromium (Playwright cannot download its own browsers
# here); without it they are skipped with the reason, except in CI, where .ci/run installs it.
$(BIN)/.installed-dev: $(BIN)/.installed requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	test -x /usr/bin/chromium || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
		echo "could not install chromium (needs root): the browser tests will be skipped"
	touch $@

run: $(BIN)/.installed
	$(BIN)/flask --app app init-db
	$(BIN)/flask --app app load-data data --if-empty
	$(BIN)/python app.py

run-prod: run

test: $(BIN)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

# The inner loop: SQLite only, no real server processes or full-size data, a quarter of the
# property-test examples, on two processes (under a minute; `make test` tries them all).
test-fast: $(BIN)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q -n 2 -m "not slow and not mariadb" --hypothesis-profile=quick

lint: $(BIN)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(BIN)/.installed-dev
	$(BIN)/python bench/bench_report.py
	$(BIN)/python bench/bench_load.py
	$(BIN)/python bench/bench_service.py
	$(BIN)/python bench/bench_ingest.py

# loop-full and 10x its stores, embedded and 1/2 Celery workers (needs MariaDB and RabbitMQ; long)
bench-scaleout: $(BIN)/.installed-dev
	$(BIN)/python bench/bench_scaleout.py

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache .hypothesis
