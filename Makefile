# Two commands: `make run` starts a demo twin, `make test` runs every check.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
DATA    ?= .twin
NAME    ?= demo
STAMP   := $(VENV)/.installed

.PHONY: run test bench lint clean second

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	@test -f $(DATA)/identity.key || $(BIN)/twin --data $(DATA) init --name $(NAME)
	$(BIN)/twin --data $(DATA) serve

# A second twin that shares the demo twin's phonebook: `make second` (then `make run` too).
second: $(STAMP)
	@test -f .twin-bob/identity.key || $(BIN)/twin --data .twin-bob init --name bob \
		--phonebook $(DATA)/phonebook.db --port-offset 100
	$(BIN)/twin --data .twin-bob serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q -ra

bench: $(STAMP)
	@for b in bench/*.py; do echo "# $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
