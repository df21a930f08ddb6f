# The README's two commands are `make run` and `make test`; CI (.ci/run) calls `make test` too.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install legacy-venv run demo test lint docs bench bench-service bench-forecast bench-demand bench-dispatch clean

install: $(STAMP)

# The independent BACnet client of the e2e tests: the original bacpypes in its own venv.
LEGACY_VENV ?= .venv-legacy
LEGACY_STAMP := $(LEGACY_VENV)/.installed
legacy-venv: $(LEGACY_STAMP)

$(LEGACY_STAMP): tests/legacy_bacpypes/requirements.txt
	$(PYTHON) -m venv $(LEGACY_VENV)
	$(LEGACY_VENV)/bin/python -m pip install --quiet -r tests/legacy_bacpypes/requirements.txt
	touch $(LEGACY_STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[train,lite,postgres,dev]"
	touch $(STAMP)

run: install
	$(BIN)/open-dsm serve $(ARGS)

demo: install
	$(BIN)/open-dsm demo $(ARGS)

test: install legacy-venv
	$(BIN)/python -m pytest $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The documentation site (mkdocs.yml, docs/): strict, so a broken link or anchor fails the build.
docs: install
	$(BIN)/mkdocs build --strict --site-dir build/site

bench: bench-service bench-forecast bench-demand bench-dispatch

bench-service: install
	$(BIN)/open-dsm bench service $(ARGS)

bench-forecast: install
	$(BIN)/open-dsm bench forecast --data ../shared/data/egauge_minute_kw_2022-07_08.csv $(ARGS)

bench-demand: install
	$(BIN)/open-dsm bench demand --data ../shared/data/egauge_minute_kw_2022-07_08.csv --target-kw 21.5 --tz America/Chicago $(ARGS)

bench-dispatch: install
	$(BIN)/open-dsm bench dispatch --data ../shared/data/egauge_minute_kw_2022-07_08.csv --tz America/Chicago --battery-kw 10 --battery-kwh 20 --thresholds 20,25 --perfect-forecast $(ARGS)

clean:
	rm -rf $(VENV) $(LEGACY_VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
