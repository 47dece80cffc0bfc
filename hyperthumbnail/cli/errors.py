"""The CLI's expected failure: printed as one line on stderr, never a traceback."""
from __future__ import annotations

__all__ = ["CLIError"]


class CLIError(Exception):
    """An expected failure: printed as one line, exit code 1 (or `exit_code`)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code
