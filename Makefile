# `make demo` and `make test` are the two commands the README starts with.
PY := .venv/bin/python
VENV_STAMP := .venv/.installed

.PHONY: setup system-deps demo test clean checkov chart-flags image

setup: $(VENV_STAMP)

# Idempotent: re-runs pip only when the project's dependencies change.
$(VENV_STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(VENV_STAMP)

# Debian packages the tests need (.ci/apt-packages.txt); needs root, CI runs it.
system-deps:
	.ci/install-system-deps

demo: setup
	$(PY) -m hyperthumbnail.serving.demo

test: setup checkov
	$(PY) -m pytest -q -ra

# checkov (security lint of the rendered Kubernetes manifests, tests/test_deploy.py) pins its own
# dependency tree (~290 MB), so it gets its own venv instead of the project's.
CHECKOV := .venv-tools/checkov/bin/checkov
checkov: $(CHECKOV)
$(CHECKOV):
	python3 -m venv .venv-tools/checkov
	.venv-tools/checkov/bin/python -m pip install -q --upgrade pip
	.venv-tools/checkov/bin/python -m pip install -q checkov==3.3.30

# The chart's tritonserver flags come from the command `hyperthumbnail serve` runs.
chart-flags: setup
	$(PY) deploy/chart_flags.py

# Container images (needs Docker; not run by CI, which has none): see docs/kubernetes.md.
IMAGE_TAG ?= $(shell sed -n 's/^appVersion: *"\(.*\)"/\1/p' deploy/helm/hyperthumbnail/Chart.yaml)
image:
	docker build -f docker/cpu.Dockerfile -t hyperthumbnail/triton-cpu:$(IMAGE_TAG) .
	docker build -f docker/gpu.Dockerfile -t hyperthumbnail/triton-gpu:$(IMAGE_TAG) .

clean:
	rm -rf build .pytest_cache .venv-tools
