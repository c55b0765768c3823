"""Print the latest epochs of a training log (``deconflow monitor PATH [--watch]``)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd

from .errors import DeconflowError
from .io.tables import read_table, to_numbers

#: Columns shown first, when present; the per-term losses follow.
LEADING = ["epoch", "train_total", "val_total", "val_selection", "val_mae", "val_mean_r", "lr", "seconds"]


def format_history(history: pd.DataFrame, n_last: int = 10) -> str:
    columns = [c for c in LEADING if c in history.columns] + [c for c in history.columns if c not in LEADING]
    tail = history[columns].tail(n_last)
    key = "val_selection" if "val_selection" in history else "val_total"
    best = int(history.loc[history[key].idxmin(), "epoch"]) if key in history and len(history) else None
    text = tail.to_string(index=False, float_format=lambda v: f"{v:.4g}")
    footer = f"{len(history)} epochs" + (f", best epoch {best}" if best is not None else "")
    return f"{text}\n{footer}"


def read_history(path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise DeconflowError(path, "training log does not exist (yet)", "start training, e.g. snakemake ... train_model")
    if path.stat().st_size == 0:
        return pd.DataFrame()
    frame = read_table(path, "training log", "let training write it again", header=True)
    return to_numbers(frame, frame.columns, "training log", "let training write it again", allow_missing=True)


def monitor(history_csv, n_last: int = 10, watch: bool = False, interval: float = 5.0, stream=None) -> None:
    """Print the last ``n_last`` epochs; with ``watch``, reprint when the file changes until Ctrl-C."""
    stream = stream or sys.stdout
    last_mtime = None
    try:
        while True:
            path = Path(history_csv)
            mtime = path.stat().st_mtime_ns if path.exists() else None
            if mtime != last_mtime or last_mtime is None:
                history = read_history(path) if mtime is not None or not watch else pd.DataFrame()
                if len(history):
                    print(f"== {history_csv} ({time.strftime('%H:%M:%S')})", file=stream)
                    print(format_history(history, n_last), file=stream, flush=True)
                elif watch:
                    print(f"waiting for {history_csv} ...", file=stream, flush=True)
                last_mtime = mtime
            if not watch:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return
