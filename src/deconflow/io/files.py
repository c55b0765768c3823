"""Reading and writing every file the pipeline touches.

Rules of this module:
- outputs are written atomically (temporary file in the same folder, then ``os.replace``),
  so a failed or interrupted job never leaves a half-written file that looks finished;
- inputs are only read, never modified;
- mixture files (HDF5) carry their provenance as attributes, and readers refuse files made
  under another normalisation with a message naming the rule to rerun.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import __version__
from .errors import DeconflowError, StaleDataError
from .tables import non_numeric_columns, read_numeric_table, read_table, to_numbers

log = logging.getLogger(__name__)

#: Bump when the layout of mixture files changes; readers refuse other versions.
MIXTURE_FORMAT_VERSION = 1

#: Which rule makes mixture files of each modality (named in "rerun" messages).
PRODUCER_RULE = {"cpm": "make_pseudobulk", "beta": "simulate_methylation"}


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


# --------------------------------------------------------------------------- reference
@dataclass
class Reference:
    """A single-cell reference: raw counts (cells x genes, CSR int) and labels."""

    counts: sp.csr_matrix
    cell_ids: np.ndarray
    genes: np.ndarray
    labels: np.ndarray
    donors: np.ndarray | None = None
    path: str | None = None
    #: (feature, ensembl_id) pairs when the reference also carries Ensembl IDs (deconflow.genes)
    gene_aliases: pd.DataFrame | None = None

    @property
    def cell_types(self) -> list[str]:
        return sorted(pd.unique(self.labels).tolist())


def read_reference(
    path: str | Path,
    label_key: str = "cell_type",
    counts_layer: str | None = None,
    donor_key: str | None = None,
    labels: str | None = None,
    gene_column: str | None = None,
) -> Reference:
    """Read a reference (h5ad, Cell Ranger ``.h5`` or 10x matrix folder) and validate that it
    holds raw integer counts; see ``deconflow.reference_formats``. The counts are read a chunk
    of rows at a time (h5ad), so the file's integer matrix and its float32 copy are never held
    at once."""
    return open_reference(path, label_key, counts_layer, donor_key, labels=labels, gene_column=gene_column).load()


def open_reference(
    path: str | Path,
    label_key: str = "cell_type",
    counts_layer: str | None = None,
    donor_key: str | None = None,
    labels: str | None = None,
    gene_column: str | None = None,
):
    """The reference validated like ``read_reference``, its counts left on disk (h5ad with a CSR
    matrix) and read a chunk of rows at a time: ``deconflow.reference_formats.ReferenceSource``."""
    from .reference_formats import open_reference as _open

    return _open(path, label_key, counts_layer, donor_key, labels=labels, gene_column=gene_column)


def write_reference_h5ad(
    counts: sp.csr_matrix, cell_ids, genes, labels, path: str | Path, label_key: str = "cell_type"
) -> None:
    import anndata as ad

    adata = ad.AnnData(
        X=sp.csr_matrix(counts, dtype=np.int32),
        obs=pd.DataFrame({label_key: pd.Categorical(np.asarray(labels, dtype=str))}, index=pd.Index(cell_ids, dtype=str)),
        var=pd.DataFrame(index=pd.Index(genes, dtype=str)),
    )
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)


# --------------------------------------------------------------------------- bulk
BULK_FIX = "give a features x samples table with a header row: feature ids in the first column, one numeric column per sample"

#: a spreadsheet's date made of a gene symbol (MARCH1 -> 1-Mar, SEPT2 -> 2-Sep, DEC1 -> 1-Dec)
SPREADSHEET_DATE = re.compile(r"^(\d{1,2}-(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)|"
                              r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)-\d{1,2}|"
                              r"\d{4}-\d{2}-\d{2}( 00:00:00)?|\d{1,2}/\d{1,2}/\d{2,4})$", re.IGNORECASE)


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
    _check_unique(ids, what, path, "sum or drop duplicated rows before deconvolution")


def read_bulk_table(path, allow_missing: bool = False) -> pd.DataFrame:
    """A features x samples text table (float64) through ``deconflow.tables``: separator, quotes,
    header and decimal commas from the content. A file whose first row is numbers has no header:
    its one sample column is named after the file (``S1.counts.txt`` -> ``S1``), several after the
    file and their position (``S1_1``, ``S1_2``); this is logged."""
    path = Path(path)
    frame = read_table(path, "bulk", BULK_FIX, header=None)
    has_header = frame.attrs["has_header"]
    if frame.shape[0] == 0:
        raise DeconflowError(path, "bulk file has no data rows", BULK_FIX)
    if has_header:
        _check_unique(frame.columns[1:], "sample ids", path, "give every sample column a unique name")
        non_numeric = non_numeric_columns(frame, frame.columns[1:])
        if non_numeric:
            raise DeconflowError(path, f"non-numeric sample columns {non_numeric[:5]}",
                                 "keep only the feature id as the first column and numeric values in the others")
    df = to_numbers(frame, frame.columns[1:], "bulk", BULK_FIX, allow_missing=True)  # NaN: named by _check_finite
    df.index = pd.Index(frame.iloc[:, 0].to_numpy(), dtype=str)
    if has_header:
        df.columns = [str(c) for c in frame.columns[1:]]
    else:
        stem = file_stem(path)
        df.columns = [stem] if df.shape[1] == 1 else [f"{stem}_{k}" for k in range(1, df.shape[1] + 1)]
        log.info("%s: no header row (the first line is numbers): sample column(s) named %s after the file",
                 path, ", ".join(df.columns[:5]))
    df.attrs.update(frame.attrs)
    return df


def file_stem(path) -> str:
    """``data/S1.counts.txt.gz`` -> ``S1``: the file name up to its first dot."""
    name = Path(path).name
    return name.split(".")[0] or name

def read_bulk(path: str | Path, allow_missing: bool = False) -> pd.DataFrame:
    """Read a bulk matrix (features x samples) from TSV/CSV (optionally .gz) or h5ad.

    For h5ad, samples are observations (rows) as in AnnData, and the result is transposed
    to features x samples. ``allow_missing`` accepts NaN (uncovered methylation regions).
    """
    path = Path(path)
    if not path.exists():
        raise DeconflowError(path, "bulk file does not exist", "check `bulk` in the dataset config")
    if path.stat().st_size == 0:
        raise DeconflowError(path, "bulk file is empty", "give a features x samples table with a header row")
    name = path.name.lower()
    if name.endswith(".h5ad"):
        import anndata as ad

        try:
            adata = ad.read_h5ad(path)
        except Exception as exc:
            raise DeconflowError(
                path,
                f"cannot be read as h5ad ({type(exc).__name__}: {exc})",
                "the file is truncated or corrupt; re-export it (samples x features AnnData)",
            ) from None
        X = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
        df = pd.DataFrame(X.T, index=adata.var_names.astype(str), columns=adata.obs_names.astype(str))
    else:
        df = read_bulk_table(path, allow_missing=allow_missing)
    df.index = df.index.astype(str)
    df.columns = df.columns.astype(str)
    check_feature_ids(df.index, path)
    _check_unique(df.columns, "sample ids", path, "give every sample column a unique name")
    values = df.to_numpy(dtype=np.float64)
    if allow_missing:  # methylation: uncovered regions are NaN; inf is still an error
        values = values[~np.isnan(values)]
    _check_finite(values, path, "the bulk matrix")
    return df.astype(np.float64)


# --------------------------------------------------------------------------- mixtures (HDF5)
@dataclass
class MixtureSet:
    """Mixtures with known proportions: the unit the models train and are evaluated on."""

    features: np.ndarray  # samples x features, float32 (CPM for RNA, beta for methylation)
    proportions: np.ndarray  # samples x cell types, rows sum to 1
    feature_names: np.ndarray
    cell_types: np.ndarray
    sample_ids: np.ndarray
    attrs: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # optional extra matrices (e.g. coverage)

    @property
    def normalization(self) -> str:
        return str(self.attrs.get("normalization"))


def write_mixtures(
    path: str | Path,
    features: np.ndarray,
    proportions: np.ndarray,
    feature_names,
    cell_types,
    sample_ids,
    attrs: dict,
    extra: dict | None = None,
) -> None:
    """Write a mixture file. ``attrs`` must at least say ``normalization``."""
    import h5py

    if "normalization" not in attrs:
        raise ValueError("attrs must include 'normalization'")
    all_attrs = {
        "log_transformed": False,
        "format_version": MIXTURE_FORMAT_VERSION,
        "library_version": __version__,
        **attrs,
    }
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.create_dataset("features", data=np.asarray(features, dtype=np.float32), compression="gzip", compression_opts=1)
            h5.create_dataset("proportions", data=np.asarray(proportions, dtype=np.float64))
            str_dt = h5py.string_dtype()
            h5.create_dataset("feature_names", data=np.asarray(feature_names, dtype=object), dtype=str_dt)
            h5.create_dataset("cell_types", data=np.asarray(cell_types, dtype=object), dtype=str_dt)
            h5.create_dataset("sample_ids", data=np.asarray(sample_ids, dtype=object), dtype=str_dt)
            for key, value in (extra or {}).items():
                h5.create_dataset(f"extra/{key}", data=np.asarray(value), compression="gzip", compression_opts=1)
            for key, value in all_attrs.items():
                h5.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value


def _decode(value):
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def read_mixtures(path: str | Path, expect_normalization: str | None = "cpm") -> MixtureSet:
    """Read a mixture file, refusing data written under another normalisation/format."""
    import h5py

    path = Path(path)
    rule = PRODUCER_RULE.get(expect_normalization or "", "the rule that made it")
    rerun = f"delete it and rerun `snakemake --forcerun {rule}` so it is regenerated"
    try:
        h5 = h5py.File(path, "r")
    except FileNotFoundError:
        raise DeconflowError(path, "mixture file does not exist", f"run `snakemake --forcerun {rule}`") from None
    except Exception as exc:
        raise DeconflowError(path, f"cannot be read as HDF5 ({type(exc).__name__}); truncated or corrupt", rerun) from None
    with h5:
        attrs = {k: _decode(v) for k, v in h5.attrs.items()}
        if attrs.get("format_version") != MIXTURE_FORMAT_VERSION:
            raise StaleDataError(
                path, f"format_version is {attrs.get('format_version')!r}, this deconflow reads {MIXTURE_FORMAT_VERSION}", rerun
            )
        if attrs.get("log_transformed") is not False and attrs.get("log_transformed") != 0:
            raise StaleDataError(
                path,
                "mixtures are log-transformed; the signature equation S·p ≈ bulk only holds in linear space",
                rerun,
            )
        if expect_normalization is not None and attrs.get("normalization") != expect_normalization:
            raise StaleDataError(
                path,
                f"normalization is {attrs.get('normalization')!r}, expected {expect_normalization!r}",
                rerun,
            )
        try:
            extra = {k: h5["extra"][k][()] for k in h5["extra"]} if "extra" in h5 else {}
            mix = MixtureSet(
                features=h5["features"][()],
                proportions=h5["proportions"][()],
                feature_names=h5["feature_names"].asstr()[()],
                cell_types=h5["cell_types"].asstr()[()],
                sample_ids=h5["sample_ids"].asstr()[()],
                attrs=attrs,
                extra=extra,
            )
        except (KeyError, OSError) as exc:
            raise DeconflowError(path, f"incomplete mixture file ({exc})", rerun) from None
    return mix


def read_signature(path: str | Path) -> pd.DataFrame:
    """Signature TSV (features x cell types, linear scale) as written by build_signature."""
    path = Path(path)
    if not path.exists():
        raise DeconflowError(path, "signature file is missing; every model is built from it", "run the signature rule first (`snakemake --forcerun build_signature`)")
    signature = read_numeric_table(path, "signature", "rerun `snakemake --forcerun build_signature`")
    values = signature.to_numpy(dtype=np.float64)
    _check_finite(values, path, "the signature")
    if values.size == 0 or values.min() < 0:
        raise DeconflowError(path, "signature is empty or has negative entries", "rerun `snakemake --forcerun build_signature`")
    sizes_path = path.with_name(LIBRARY_SIZE_FILE)
    if sizes_path.exists():
        signature.attrs["cell_library_size"] = read_library_size(sizes_path, signature.columns)
    return signature


#: Written by build_signature next to signature.tsv: mean library size (UMIs per cell) per type.
LIBRARY_SIZE_FILE = "cell_library_size.tsv"


def read_library_size(path: str | Path, cell_types) -> pd.Series:
    """Per-type mean library size, in the order of ``cell_types`` (all positive and finite)."""
    sizes = read_numeric_table(path, "library sizes", "rerun `snakemake --forcerun build_signature`").iloc[:, 0]
    missing = [t for t in map(str, cell_types) if t not in sizes.index]
    if missing:
        raise DeconflowError(path, f"no library size for cell types {missing}", "rerun `snakemake --forcerun build_signature`")
    sizes = sizes.loc[list(map(str, cell_types))].astype(np.float64)
    if not np.all(np.isfinite(sizes.to_numpy())) or (sizes <= 0).any():
        raise DeconflowError(path, "library sizes must be positive and finite", "rerun `snakemake --forcerun build_signature`")
    return sizes
