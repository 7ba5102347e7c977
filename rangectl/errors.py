"""Errors rangectl reports as one line, with the exit code each maps to.

Exit codes (documented in docs/cli.md):
  0  success
  1  invalid input, a failed check, or an operation that failed
  2  usage error (bad options, missing file on the command line)
  3  environment problem (Docker engine down, image missing, tool missing)
  4  a range or team that does not exist
  130 interrupted (Ctrl-C)
"""

from __future__ import annotations


class RangeError(Exception):
    """An error shown to the user as one line; never a traceback."""

    exit_code = 1

    def __init__(self, message: str, *, fix: str | None = None):
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        if self.fix:
            return f"{self.message} (fix: {self.fix})"
        return self.message


class UsageError(RangeError):
    exit_code = 2


class EnvironmentProblem(RangeError):
    exit_code = 3


class NotFound(RangeError):
    exit_code = 4


class NotRunning(RangeError):
    """A node that exists but is not running (``rangectl up`` starts it again)."""


class ScenarioError(RangeError):
    """A scenario file that does not load or validate."""

    exit_code = 1
