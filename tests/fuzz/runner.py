"""Run one fuzz target under libFuzzer (atheris) for a set time, on one core.

New corpus entries go to build/fuzz/<name>/corpus (git-ignored; $FUZZ_WORK replaces build/fuzz);
the committed seeds in tests/fuzz/corpus/<name>/ and past findings in tests/fuzz/findings/<name>/
are only read. Findings are written as
build/fuzz/<name>/crash-*, timeout-* (a call over 1 s) or oom-* (the process over 1 GiB).
"""
from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parents[2]
SEEDS = Path(__file__).parent / "corpus"
FINDINGS = Path(__file__).parent / "findings"  # inputs that once failed: replayed by every run


def run(name: str, target: Callable[[bytes], None], argv: list[str], max_len: int = 4096) -> None:
    """argv: [prog, SECONDS?, libFuzzer flags...] (e.g. -runs=N instead of a time)."""
    work = Path(os.environ.get("FUZZ_WORK", ROOT / "build" / "fuzz")) / name
    (work / "corpus").mkdir(parents=True, exist_ok=True)
    seconds = int(argv[1]) if len(argv) > 1 and argv[1].isdigit() else 600
    extra = [a for a in argv[1:] if not a.isdigit()]
    # libFuzzer reads its peak RSS from getrusage, and Linux carries that peak across exec: a target
    # started from a big process (pytest with models loaded) would start "over" a plain 1 GiB limit.
    # So the limit is 1 GiB above what was inherited, and any single allocation over 1 GiB is a finding.
    inherited_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    rss_limit_mb = 1024 + (inherited_mb if inherited_mb > 256 else 0)
    flags = [argv[0], f"-max_total_time={seconds}", "-timeout=1", f"-rss_limit_mb={rss_limit_mb}",
             "-malloc_limit_mb=1024", f"-max_len={max_len}",
             f"-artifact_prefix={work}/", "-print_final_stats=1", *extra, str(work / "corpus"), str(SEEDS / name),
             str(FINDINGS / name)]
    print(" ".join(flags), file=sys.stderr)
    start = time.monotonic()
    atheris.Setup(flags, target)
    try:
        atheris.Fuzz()
    finally:
        print(f"wall time {time.monotonic() - start:.0f} s", file=sys.stderr)
