"""What a failed image build reports: :class:`ImageBuildError` with the tail of its build log."""

from __future__ import annotations

from rangectl.errors import RangeError

LOG_TAIL = 30  # lines of a build's log kept for its error


class ImageBuildError(RangeError):
    """A recipe that did not build; ``log_tail`` holds the last lines of its build log."""

    exit_code = 1

    def __init__(
        self, message: str, *, fix: str | None = None, recipe: str = "", log_tail: list[str] | None = None
    ):
        super().__init__(message, fix=fix)
        self.recipe = recipe
        self.log_tail = list(log_tail or [])


def short(text: str, n: int = 160) -> str:
    """``text`` on one line, at most ``n`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
