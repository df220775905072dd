# The two commands of the README: `make run` (the daemon) and `make test` (the suite).
# Both build the virtual environment first, so they work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config.toml
# pip leaves this stamp only after a successful install; pyproject.toml changes re-install.
STAMP := $(VENV)/.installed

.PHONY: venv run test bench-check lint postgres browser bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,ray]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/cctv-gender db upgrade --config $(CONFIG)
	$(BIN)/cctv-gender watch --config $(CONFIG)

# The whole suite, slow soak tests included, one worker per core (at most 4: each holds a model),
# with the lint beside it (mypy from cold takes half a minute of one core); its output follows the
# tests', and either failing fails the target.
test: $(STAMP) postgres browser
	@lint_log=$$(mktemp); $(MAKE) --no-print-directory lint > $$lint_log 2>&1 & lint=$$!; \
	$(BIN)/python -m pytest -n auto --maxprocesses=4; tests=$$?; \
	wait $$lint; linted=$$?; cat $$lint_log; rm -f $$lint_log; \
	if [ $$linted -ne 0 ]; then echo "make lint failed" >&2; fi; \
	test $$tests -eq 0 && test $$linted -eq 0

# bench/gpu.sh end to end on the CPU with the tiny model, with and without --diagnostics (tests
# marked `bench`, about 3 minutes): kept out of `make test`'s time, run by CI after it, so the
# script a GPU loan runs cannot rot.
bench-check: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m bench

# Lint, strict types over watcher/ and model/, and the layers in pyproject.toml's importlinter.
lint: $(STAMP)
	$(BIN)/python -m ruff check watcher model tests bench migrations
	$(BIN)/python -m mypy
	$(BIN)/lint-imports

# The suite runs against the local PostgreSQL (127.0.0.1:5432, database test): start it when down.
postgres:
	@pg_isready -q -h 127.0.0.1 -p 5432 || \
		pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | sort -V | tail -1) main start
	@pg_isready -h 127.0.0.1 -p 5432 -t 30

# The web pages' tests drive Debian's Chromium (Playwright downloads no browser here): install it
# when missing. Root installs directly; anyone else needs sudo.
browser:
	@command -v chromium >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends chromium; }
	@chromium --version 2>/dev/null

bench: $(STAMP)
	$(BIN)/python bench/watch_once.py

clean:
	rm -rf $(VENV) build *.egg-info
