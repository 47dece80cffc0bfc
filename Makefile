# `make demo` and `make test` are the two commands the README starts with.
PY := .venv/bin/python
VENV_STAMP := .venv/.installed

.PHONY: setup system-deps demo test fuzz fuzz-exif clean

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

test: setup
	$(PY) -m pytest -q -ra

# Coverage-guided fuzzing (atheris), one process on one core, for FUZZ_SECONDS; findings land in
# build/fuzz/<target>/ and each becomes a regression test in tests/test_fuzz.py (docs/robustness.md).
FUZZ_SECONDS ?= 600
fuzz: setup
	$(PY) -m tests.fuzz.thumbnail_target $(FUZZ_SECONDS)

fuzz-exif: setup
	$(PY) -m tests.fuzz.exif_target $(FUZZ_SECONDS)

clean:
	rm -rf build .pytest_cache
