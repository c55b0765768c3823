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
