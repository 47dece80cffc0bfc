# `make demo` and `make test` are the two commands the README starts with.
PY := .venv/bin/python
VENV_STAMP := .venv/.installed
PERF_ANALYZER := .venv/bin/perf_analyzer
# This machine's pip configuration names package folders that may not exist; pip says so once per
# package. That is noise for whoever runs `make setup`, so only that one message is dropped.
PIP_QUIET := 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
SHELL := /bin/bash

.DELETE_ON_ERROR:  # a failed install leaves no wrapper behind for make to trust
.PHONY: setup system-deps perf-analyzer model-analyzer demo lint test clean checkov chart-sync image fuzz fuzz-exif viewer

setup: $(VENV_STAMP) $(PERF_ANALYZER)

# Idempotent: re-runs pip only when the project's dependencies change.
$(VENV_STAMP): pyproject.toml
	@test -x $(PY) || { echo "creating .venv"; python3 -m venv .venv; }
	@echo "installing hyperthumbnail and its dependencies into .venv (a few minutes the first time)"
	@$(PY) -m pip install -q --upgrade pip $(PIP_QUIET)
	@$(PY) -m pip install -qq -e ".[dev]" $(PIP_QUIET)  # -qq: errors only (setuptools warns about every flat-layout editable install)
	@touch $(VENV_STAMP)

# NVIDIA's real perf_analyzer (2.48.0 binary + libb64 + libcudart) into the venv; the script
# itself is idempotent too (`make perf-analyzer` re-checks it).
$(PERF_ANALYZER): scripts/install_perf_analyzer.py $(VENV_STAMP)
	$(PY) scripts/install_perf_analyzer.py .venv
	@touch $(PERF_ANALYZER)

perf-analyzer: $(VENV_STAMP)
	$(PY) scripts/install_perf_analyzer.py .venv

# triton-model-analyzer in its own venv (it pins a different tritonclient); only the
# model-analyzer benchmark needs it (hyperthumbnail bench model-analyzer).
MODEL_ANALYZER := .venv-tools/model-analyzer/bin/model-analyzer
model-analyzer: $(MODEL_ANALYZER)
$(MODEL_ANALYZER):
	test -x .venv-tools/model-analyzer/bin/python || python3 -m venv .venv-tools/model-analyzer
	.venv-tools/model-analyzer/bin/python -m pip install -q "triton-model-analyzer==1.42.0" $(PIP_QUIET)
	@touch $(MODEL_ANALYZER)

# Debian packages the tests need (.ci/apt-packages.txt); `make test` runs it first. Needs root when
# something is missing: without it, it stops at once and prints the one apt-get command to run.
system-deps:
	.ci/install-system-deps

demo: setup
	$(PY) -m hyperthumbnail.serving.demo

lint: setup
	$(PY) -m ruff check .

test: system-deps setup lint checkov viewer
	$(PY) -m pytest -q -ra

# The static browser viewer (docs/viewer.md) in build/viewer/: `npm ci` from viewer/package-lock.json,
# the decoder graphs exported from the shipped weights, manifest.json. Idempotent: the build keeps the
# folder when its inputs (page, lockfile, weights, export code, tiling) are unchanged.
viewer: setup
	.venv/bin/hyperthumbnail viewer build

# checkov (security lint of the rendered Kubernetes manifests, tests/test_deploy.py) pins its own
# dependency tree (~290 MB), so it gets its own venv instead of the project's.
CHECKOV := .venv-tools/checkov/bin/checkov
checkov: $(CHECKOV)
$(CHECKOV):
	@echo "installing checkov into .venv-tools/checkov"
	@python3 -m venv .venv-tools/checkov
	@.venv-tools/checkov/bin/python -m pip install -q --upgrade pip $(PIP_QUIET)
	@.venv-tools/checkov/bin/python -m pip install -q checkov==3.3.30 $(PIP_QUIET)

# The chart's tritonserver flags, health/metrics paths and model names come from the package.
chart-sync: setup
	$(PY) deploy/chart_sync.py
	$(PY) deploy/chart_sizing.py

# Container images (needs Docker; not run by CI, which has none): see docs/kubernetes.md.
IMAGE_TAG ?= $(shell sed -n 's/^appVersion: *"\(.*\)"/\1/p' deploy/helm/hyperthumbnail/Chart.yaml)
image:
	docker build -f docker/cpu.Dockerfile -t hyperthumbnail/triton-cpu:$(IMAGE_TAG) .
	docker build -f docker/gpu.Dockerfile -t hyperthumbnail/triton-gpu:$(IMAGE_TAG) .

# Coverage-guided fuzzing (atheris), one process on one core, for FUZZ_SECONDS; findings land in
# build/fuzz/<target>/ and each becomes a regression test in tests/test_fuzz.py (docs/robustness.md).
FUZZ_SECONDS ?= 600
fuzz: setup
	$(PY) -m tests.fuzz.thumbnail_target $(FUZZ_SECONDS)

fuzz-exif: setup
	$(PY) -m tests.fuzz.exif_target $(FUZZ_SECONDS)

clean:
	rm -rf build .pytest_cache .venv-tools
