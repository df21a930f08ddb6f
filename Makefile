# The README's two commands are `make run` and `make test`; CI (.ci/run) calls `make test` too.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install run test lint bench bench-service bench-forecast bench-demand clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[train,lite,postgres,dev]"
	touch $(STAMP)

run: install
	$(BIN)/open-dsm serve $(ARGS)

test: install
	$(BIN)/python -m pytest $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: bench-service bench-forecast bench-demand

bench-service: install
	$(BIN)/open-dsm bench service $(ARGS)

bench-forecast: install
	$(BIN)/open-dsm bench forecast --data ../shared/data/egauge_minute_kw_2022-07_08.csv $(ARGS)

bench-demand: install
	$(BIN)/open-dsm bench demand --data ../shared/data/egauge_minute_kw_2022-07_08.csv --target-kw 21.5 --tz America/Chicago $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
