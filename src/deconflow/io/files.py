"""Writing outputs, and the checks every reader shares.

- outputs are written atomically (temporary file in the same folder, then ``os.replace``),
  so a failed or interrupted job never leaves a half-written file that looks finished;
- feature and sample ids are unique, values finite; gene symbols a spreadsheet turned into
  dates are named as such.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from ..errors import DeconflowError

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- atomic output
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    On any exception the temporary file is removed and ``path`` is left untouched, so no
    partial output survives a failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates the file 0600; give the output the mode a plain open() would (0666
        # minus the umask) so that group members on a shared cluster can read results.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_table(df: pd.DataFrame, path: str | Path, index: bool = True, float_format: str = "%.8g") -> None:
    """Write a CSV/TSV (by extension) atomically with a fixed float format (byte-stable)."""
    sep = "\t" if str(path).endswith((".tsv", ".tsv.gz")) else ","
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep=sep, index=index, float_format=float_format, lineterminator="\n")


def write_json(obj: dict, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path, what: str, fix: str) -> dict:
    """The JSON object in ``path``; DeconflowError naming ``what`` the file should be and the ``fix``
    when the file does not exist or is not JSON."""
    path = Path(path)
    if not path.is_file():
        raise DeconflowError(path, f"{what} does not exist", fix)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DeconflowError(path, f"{what} is not JSON ({exc})", fix) from None


def file_checksum(path: str | Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return f"{algorithm}:{h.hexdigest()}"


# --------------------------------------------------------------------------- checks
def _check_unique(names: pd.Index | np.ndarray, what: str, path, fix: str) -> None:
    names = pd.Index(names)
    if names.has_duplicates:
        dups = names[names.duplicated()].unique()[:5].tolist()
        raise DeconflowError(path, f"duplicate {what}: {dups}", fix)


def _check_finite(values: np.ndarray, path, what: str) -> None:
    if not np.all(np.isfinite(values)):
        n_bad = int((~np.isfinite(values)).sum())
        raise DeconflowError(
            path,
            f"{n_bad} NaN/inf values in {what}",
            "remove or impute the missing values before running deconflow",
        )


# --------------------------------------------------------------------------- feature ids
#: a spreadsheet's date made of a gene symbol (MARCH1 -> 1-Mar, SEPT2 -> 2-Sep, DEC1 -> 1-Dec)
SPREADSHEET_DATE = re.compile(r"^(\d{1,2}-(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)|"
                              r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)-\d{1,2}|"
                              r"\d{4}-\d{2}-\d{2}( 00:00:00)?|\d{1,2}/\d{1,2}/\d{2,4})$", re.IGNORECASE)


#: a chromosome name (chr1, chrX, 1, MT, chr1_KI270706v1_random)
CHROMOSOME = re.compile(r"^(chr)?([1-9]|1\d|2[0-2]|X|Y|M|MT)(_\w+)?$", re.IGNORECASE)


def spreadsheet_dates(ids) -> list[str]:
    """The identifiers among ``ids`` that are dates a spreadsheet made of gene symbols
    (Zeeberg et al. 2004, BMC Bioinformatics 5:80; Ziemann et al. 2016, Genome Biology 17:177)."""
    return [str(i) for i in ids if SPREADSHEET_DATE.match(str(i))]


def check_feature_ids(ids, path, what: str = "feature (gene/region) ids") -> None:
    """Unique feature ids; duplicated spreadsheet dates (1-Mar from MARCH1 and MARC1) are named as
    such, since summing them would add two different genes."""
    ids = pd.Index(ids)
    if not ids.has_duplicates:
        dates = spreadsheet_dates(ids)
        if dates:
            log.warning("%s: %d gene ids are dates a spreadsheet made of gene symbols (%s; e.g. MARCH1 -> 1-Mar, SEPT2 -> 2-Sep): "
                        "they match no gene; export the table without opening it in a spreadsheet to keep them",
                        path, len(dates), ", ".join(dates[:5]))
        return
    duplicated = ids[ids.duplicated()].unique().tolist()
    dates = spreadsheet_dates(duplicated)
    if dates:
        raise DeconflowError(path, f"gene ids {dates[:5]} occur several times: they are dates a spreadsheet made of gene "
                                   "symbols (MARCH1 and MARC1 both become 1-Mar, SEPT2 becomes 2-Sep), so their rows cannot be told apart",
                             "export the table again from its source without opening it in a spreadsheet (or import the gene "
                             "column as text), or delete those rows; never sum them")
    chromosomes = [d for d in duplicated if CHROMOSOME.match(str(d))]
    if len(chromosomes) >= 0.5 * len(duplicated):
        raise DeconflowError(path, f"the first column holds chromosome names ({chromosomes[:5]}), not one id per row: a region "
                                   "table without recognised start/end columns", "name the coordinate columns chr, start, end "
                                   "(or give region ids chr:start-end in the first column); never sum rows of one chromosome")
    _check_unique(ids, what, path, "sum or drop duplicated rows before deconvolution")
