"""Signature matrix S (features x cell types) for the linear model S·p ≈ bulk.

S is initialised from the per-cell-type mean CPM of the train pool: the expected CPM profile of
a pure population of that type, so that a CPM mixture is Σ_k p_k S[:, k] in expectation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .normalize import cpm


def cell_type_mean_cpm(counts: sp.csr_matrix, labels: np.ndarray, genes, cell_types: list[str]) -> pd.DataFrame:
    """Mean over cells of per-cell CPM, one column per cell type (genes x types)."""
    labels = np.asarray(labels).astype(str)
    cell_cpm = cpm(sp.csr_matrix(counts))
    columns = {}
    for cell_type in cell_types:
        members = labels == cell_type
        if not members.any():
            raise ValueError(f"no cells of type {cell_type!r} to build its signature column")
        columns[cell_type] = np.asarray(cell_cpm[members].mean(axis=0)).ravel()
    return pd.DataFrame(columns, index=pd.Index(np.asarray(genes).astype(str), name="gene"))


def cell_type_library_size(counts: sp.csr_matrix, labels: np.ndarray, cell_types: list[str]) -> pd.Series:
    """Mean total counts per cell (UMIs) of each cell type: its mRNA content per cell.

    Why: a CPM mixture is Σ_k m_k·S_k with m_k the type's share of *mRNA*; pseudobulk truth and
    flow cytometry are shares of *cells*. With L_k the mean library size, m_k ∝ p_k·L_k, so the
    cell fractions are p_k ∝ m_k / L_k (the conversion MuSiC and Rectangle apply). Cell types
    differ several-fold (embedded PBMC: platelets ≈ 900, T cells ≈ 1,800, plasma cells ≈ 10,000).
    """
    labels = np.asarray(labels).astype(str)
    totals = np.asarray(sp.csr_matrix(counts).sum(axis=1)).ravel().astype(np.float64)
    sizes = {}
    for cell_type in cell_types:
        members = labels == cell_type
        if not members.any():
            raise ValueError(f"no cells of type {cell_type!r} to measure its library size")
        sizes[cell_type] = float(totals[members].mean())
    return pd.Series(sizes, name="mean_library_size").rename_axis("cell_type")


def select_marker_genes(signature: pd.DataFrame, n_per_type: int, min_mean_cpm: float = 1.0) -> pd.DataFrame:
    """Keep the ``n_per_type`` genes per type with the largest log fold change against the
    highest other type (among genes with mean CPM ≥ ``min_mean_cpm`` in that type).

    Selection uses log ratios only to rank genes; the returned matrix is the linear CPM rows.
    """
    values = signature.to_numpy()
    log_values = np.log1p(values)
    chosen: set[int] = set()
    for k in range(values.shape[1]):
        others = np.delete(log_values, k, axis=1).max(axis=1)
        score = log_values[:, k] - others
        score[values[:, k] < min_mean_cpm] = -np.inf
        order = np.argsort(-score, kind="stable")
        chosen.update(int(i) for i in order[:n_per_type] if np.isfinite(score[i]))
    return signature.iloc[sorted(chosen)]
