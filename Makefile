# The two commands of the README: `make run` (the daemon) and `make test` (the suite).
# Both build the virtual environment first, so they work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config.toml
# pip leaves this stamp only after a successful install; pyproject.toml changes re-install.
STAMP := $(VENV)/.installed

.PHONY: venv run test bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/cctv-gender db upgrade --config $(CONFIG)
	$(BIN)/cctv-gender watch --config $(CONFIG)

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/watch_once.py

clean:
	rm -rf $(VENV) build *.egg-info
