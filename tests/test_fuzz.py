"""The fuzz targets stay runnable and their findings stay fixed.

The long runs are `make fuzz` / `make fuzz-exif` (docs/robustness.md records them); here each
target runs a few thousand executions from the committed seeds, the seeds are checked to be what
tests/fuzz/seeds.py makes, and every finding of a fuzz run is replayed as a regression case.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.seeds import exif_seeds, seeds

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "fuzz" / "corpus"


@pytest.mark.parametrize("target,made", [("thumbnail", seeds), ("exif", exif_seeds)])
def test_committed_seeds_are_what_the_script_makes(target, made):
    committed = {p.name: p.read_bytes() for p in (CORPUS / target).iterdir()}
    assert committed == made()


@pytest.mark.parametrize("target", ["thumbnail", "exif"])
def test_fuzz_target_runs_clean(tmp_path, target):
    """libFuzzer exits 0 after N executions only if no input crashed, hung (> 1 s) or ran out of memory."""
    runs = 3000
    done = subprocess.run([sys.executable, "-m", f"tests.fuzz.{target}_target", "60", f"-runs={runs}", "-seed=1"],
                          cwd=ROOT, env={**os.environ, "FUZZ_WORK": str(tmp_path)}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Done {runs} runs" in done.stderr
    assert not [p for p in (tmp_path / target).iterdir() if p.name.startswith(("crash-", "timeout-", "oom-"))]
