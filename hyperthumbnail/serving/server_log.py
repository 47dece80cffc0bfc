"""Why a tritonserver failed, read from its log (glog lines, protobuf errors, the model table)."""
from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["failure_reasons"]

# Log lines that are errors on a CPU-only machine but harmless (the wheel's server probes CUDA).
_BENIGN_ERRORS = ("CudaDriverHelper has not been initialized",
                  "CUDA driver version is insufficient for CUDA runtime version")  # ensembles probe for a CUDA stream
_GLOG_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ [^\]]+\] (.*)$")

_STATUS_PREFIX = re.compile(
    r"^(ERROR: Failed to create instance|model '[^']*' UNAVAILABLE|Internal|Invalid argument|Not found|Unavailable)\s*[:-]\s*")
_GENERIC_FAILURES = ("creating server: Internal - failed to load all models",)


def _clean(message: str) -> str:
    """One line: the Python backend logs tracebacks as literal '\\n\\nAt:\\n  file(line): ...'."""
    message = message.split("\\n\\nAt:")[0].split("\n\nAt:")[0]
    return " ".join(message.replace("\\n", " ").split())


def _core(message: str) -> str:
    while True:
        stripped = _STATUS_PREFIX.sub("", message, count=1)
        if stripped == message:
            return message
        message = stripped


def failure_reasons(log_lines: Iterable[str]) -> list[str]:
    """Why a server failed, from its log, most specific first and without repeats: glog error
    lines (model load failures), protobuf parse errors, UNAVAILABLE models, the final error."""
    found: list[str] = []
    for raw in log_lines:
        line = raw.rstrip()
        m = _GLOG_LINE.match(line)
        if m and m.group(1) in "EF":
            msg = m.group(2).strip().strip('"')
        elif line.startswith("[libprotobuf ERROR"):
            msg = line.split("] ", 1)[-1]
        elif line.startswith("|") and "UNAVAILABLE:" in line:
            cells = [c.strip() for c in line.strip("|").split("|")]
            msg = f"model '{cells[0]}' {cells[-1]}"
        elif line.startswith("error: "):
            msg = line[len("error: "):]
        else:
            continue
        msg = _clean(msg)
        if msg and not any(b in msg for b in _BENIGN_ERRORS) and msg not in found:
            found.append(msg)
    # Drop lines that only repeat another line's detail (longest, most specific lines win), and
    # the generic summary when anything more specific is left.
    kept: list[str] = []
    for msg in sorted(found, key=len, reverse=True):
        if not any(_core(msg) in other for other in kept):
            kept.append(msg)
    reasons = [msg for msg in found if msg in kept]
    specific = [r for r in reasons if r not in _GENERIC_FAILURES]
    return specific or reasons
