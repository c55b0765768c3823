"""Logging set-up shared by the workflow scripts and the CLI."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

from .errors import DeconflowError
from .threads import fixed_threads

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def script_logging(log_path: str | Path | None):
    """Log to ``log_path`` (and stderr); turn a DeconflowError into one clear line and exit 1.

    A user's mistake should read as one sentence (file, problem, fix), not a traceback. The body
    runs inside :func:`deconflow.threads.fixed_threads`, so every workflow script writes the same
    bytes whatever thread variables its job was started with.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(level=logging.INFO, format=FORMAT, handlers=handlers, force=True)
    try:
        with fixed_threads():
            yield logging.getLogger("deconflow")
    except DeconflowError as exc:
        logging.getLogger("deconflow").error("%s", exc)
        sys.exit(1)
