# `make demo` and `make test` are the two commands the README starts with.
PY := .venv/bin/python
VENV_STAMP := .venv/.installed
# This machine's pip configuration names package folders that may not exist; pip says so once per
# package. That is noise for whoever runs `make setup`, so only that one message is dropped.
PIP_QUIET := 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
SHELL := /bin/bash

.PHONY: setup system-deps demo lint test clean

setup: $(VENV_STAMP)

# Idempotent: re-runs pip only when the project's dependencies change.
$(VENV_STAMP): pyproject.toml
	@test -x $(PY) || { echo "creating .venv"; python3 -m venv .venv; }
	@echo "installing hyperthumbnail and its dependencies into .venv (a few minutes the first time)"
	@$(PY) -m pip install -q --upgrade pip $(PIP_QUIET)
	@$(PY) -m pip install -q -e ".[dev]" $(PIP_QUIET)
	@touch $(VENV_STAMP)

# Debian packages the tests need (.ci/apt-packages.txt); needs root, CI runs it.
system-deps:
	.ci/install-system-deps

demo: setup
	$(PY) -m hyperthumbnail.serving.demo

lint: setup
	$(PY) -m ruff check .

test: setup lint
	$(PY) -m pytest -q -ra

clean:
	rm -rf build .pytest_cache
