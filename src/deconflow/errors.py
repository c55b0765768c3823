"""One error type for every problem a user can fix.

Each message names the file, the problem and the fix, so that a failed Snakemake job
prints one readable line instead of a traceback from deep inside numpy.
"""

from __future__ import annotations

from pathlib import Path


class DeconflowError(Exception):
    """A problem with the user's input, config or stale pipeline data."""

    def __init__(self, path: str | Path | None, problem: str, fix: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        self.fix = fix
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"{where}{problem}. Fix: {fix}")


class StaleDataError(DeconflowError):
    """Data written under another normalisation / format; it must be regenerated."""
