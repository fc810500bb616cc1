# The two commands a newcomer needs: `make demo` and `make test`.
# Each creates .venv when it is missing and installs the project with its test extras.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit integration bench system-tools clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/digest demo

# Optional programs some tests use (headless Chromium, SpamAssassin, Postfix's smtp-sink,
# the reference MJML validator). Installed when this machine allows it; the tests that need
# them skip with a reason where they are missing.
system-tools:
	-@sh tests/install-system-tools.sh

test: $(STAMP) system-tools
	$(BIN)/ruff check digest tests $(wildcard bench)
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration

bench: $(STAMP)
	$(BIN)/python bench/gather.py
	$(BIN)/python bench/send.py
	$(BIN)/python bench/import_csv.py
	$(BIN)/python bench/workers.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache .mypy_cache .ruff_cache build *.egg-info
