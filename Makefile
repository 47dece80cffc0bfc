# `make demo` and `make test` are the two commands the README starts with.
PY := .venv/bin/python
VENV_STAMP := .venv/.installed
PERF_ANALYZER := .venv/bin/perf_analyzer
# This machine's pip configuration names package folders that may not exist; pip says so once per
# package. That is noise for whoever runs `make setup`, so only that one message is dropped.
PIP_QUIET := 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
SHELL := /bin/bash

.DELETE_ON_ERROR:  # a failed install leaves no wrapper behind for make to trust
.PHONY: setup system-deps perf-analyzer model-analyzer demo lint test clean

setup: $(VENV_STAMP) $(PERF_ANALYZER)

# Idempotent: re-runs pip only when the project's dependencies change.
$(VENV_STAMP): pyproject.toml
	@test -x $(PY) || { echo "creating .venv"; python3 -m venv .venv; }
	@echo "installing hyperthumbnail and its dependencies into .venv (a few minutes the first time)"
	@$(PY) -m pip install -q --upgrade pip $(PIP_QUIET)
	@$(PY) -m pip install -q -e ".[dev]" $(PIP_QUIET)
	@touch $(VENV_STAMP)

# NVIDIA's real perf_analyzer (2.48.0 binary + libb64 + libcudart) into the venv; the script
# itself is idempotent too (`make perf-analyzer` re-checks it).
$(PERF_ANALYZER): scripts/install_perf_analyzer.py $(VENV_STAMP)
	$(PY) scripts/install_perf_analyzer.py .venv
	@touch $(PERF_ANALYZER)

perf-analyzer: $(VENV_STAMP)
	$(PY) scripts/install_perf_analyzer.py .venv

# triton-model-analyzer in its own venv (it pins a different tritonclient); only the
# model-analyzer benchmark needs it (python -m hyperthumbnail.benchmarks.model_analyzer).
MODEL_ANALYZER := .venv-tools/model-analyzer/bin/model-analyzer
model-analyzer: $(MODEL_ANALYZER)
$(MODEL_ANALYZER):
	test -x .venv-tools/model-analyzer/bin/python || python3 -m venv .venv-tools/model-analyzer
	.venv-tools/model-analyzer/bin/python -m pip install -q "triton-model-analyzer==1.42.0" $(PIP_QUIET)
	@touch $(MODEL_ANALYZER)

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
