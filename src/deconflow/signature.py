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
    """Mean over cells of per-cell CPM, one column per cell type (genes x types).

    ``counts``: cells x genes raw counts (float32 CSR for float32 output); cells whose label is
    not in ``cell_types`` are left out. Raises ``ValueError`` for a type without cells.
    """
    counts = sp.csr_matrix(counts)
    signature, _ = cell_type_means_chunked([(np.arange(counts.shape[0]), counts)], labels, genes, cell_types)
    return signature


def cell_type_means_chunked(chunks, labels: np.ndarray, genes, cell_types: list[str], detection: bool = False):
    """Per-type mean CPM (genes x types) of cells given a few rows at a time, and every cell's
    total counts (library size, in the order of ``labels``); with ``detection`` also the
    genes x types share of each type's cells with at least one count (a third return value).

    ``chunks``: iterable of ``(positions, counts)``, ``positions`` indexing ``labels`` in
    increasing order over all chunks, ``counts`` their cells x genes CSR raw counts. Memory: one
    chunk plus the types x genes sums, whatever the number of cells.

    The means are per-type sums through an indicator-matrix product (scipy sparse), equal bit
    for bit to ``cpm(counts)[members].mean(axis=0)`` over all cells at once: each cell's CPM is
    scaled by 1/n_type first (what scipy's ``mean`` does) and the indicator's row k is the
    running sum of type k (weight 1) followed by the chunk's cells of type k (weight 1), so
    every gene's sum is accumulated cell after cell in the same order as in one piece.
    """
    labels = np.asarray(labels).astype(str)
    type_of = pd.Index(cell_types).get_indexer(labels)
    n_types = len(cell_types)
    n_cells = np.bincount(type_of[type_of >= 0], minlength=n_types)
    for cell_type, n in zip(cell_types, n_cells):
        if n == 0:
            raise ValueError(f"no cells of type {cell_type!r} to build its signature column")
    totals = np.zeros(len(labels), dtype=np.float64)
    running = None
    detected = None
    for positions, counts in chunks:
        counts = sp.csr_matrix(counts)
        totals[positions] = np.asarray(counts.sum(axis=1)).ravel()
        types = type_of[positions]
        chosen = types >= 0
        selected = counts[chosen] if not chosen.all() else counts
        types = types[chosen]
        if detection:  # cells with a count per type and gene: an indicator-matrix product (exact integers)
            member = sp.csr_matrix((np.ones(len(types)), (types, np.arange(len(types)))), shape=(n_types, len(types)))
            part = (member @ (selected > 0).astype(np.float64)).toarray()
            detected = part if detected is None else detected + part
        cell_cpm = cpm(selected)
        # (cpm * (1.0 / n)) in the CPM's dtype, as scipy's mean scales before summing
        scale = np.array([1.0 / n for n in n_cells], dtype=np.float64).astype(cell_cpm.dtype)
        cell_cpm.data = cell_cpm.data * np.repeat(scale[types], np.diff(cell_cpm.indptr))
        if running is None:
            running = sp.csr_matrix((n_types, counts.shape[1]), dtype=cell_cpm.dtype)
        stacked = sp.vstack([running, cell_cpm], format="csr")
        rows = np.concatenate([np.arange(n_types), types])
        columns = np.concatenate([np.arange(n_types), n_types + np.arange(len(types))])
        indicator = sp.csr_matrix((np.ones(len(rows), dtype=cell_cpm.dtype), (rows, columns)),
                                  shape=(n_types, stacked.shape[0]))
        running = sp.csr_matrix(indicator @ stacked)
    if running is None:
        raise ValueError("no cells to build the signature from")
    means = running.toarray()
    index = pd.Index(np.asarray(genes).astype(str), name="gene")
    signature = pd.DataFrame({cell_type: means[k] for k, cell_type in enumerate(cell_types)}, index=index)
    if not detection:
        return signature, totals
    shares = detected / n_cells[:, None]
    return signature, totals, pd.DataFrame({cell_type: shares[k] for k, cell_type in enumerate(cell_types)}, index=index)


def cell_type_library_size(counts: sp.csr_matrix, labels: np.ndarray, cell_types: list[str]) -> pd.Series:
    """Mean total counts per cell (UMIs) of each cell type: its mRNA content per cell.

    Why: a CPM mixture is Σ_k m_k·S_k with m_k the type's share of *mRNA*; pseudobulk truth and
    flow cytometry are shares of *cells*. With L_k the mean library size, m_k ∝ p_k·L_k, so the
    cell fractions are p_k ∝ m_k / L_k (the conversion MuSiC and Rectangle apply). Cell types
    differ several-fold (embedded PBMC: platelets ≈ 900, T cells ≈ 1,800, plasma cells ≈ 10,000).
    """
    totals = np.asarray(sp.csr_matrix(counts).sum(axis=1)).ravel().astype(np.float64)
    return library_size_from_totals(totals, labels, cell_types)


def library_size_from_totals(totals: np.ndarray, labels: np.ndarray, cell_types: list[str]) -> pd.Series:
    """``cell_type_library_size`` from every cell's total counts (float64, in label order)."""
    labels = np.asarray(labels).astype(str)
    totals = np.asarray(totals, dtype=np.float64)
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
