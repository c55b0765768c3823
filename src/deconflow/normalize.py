"""Normalisation, kept in linear space.

Mixtures are linear only in linear space: CPM(bulk) ≈ Σ_k p_k · CPM(type_k). A log transform
breaks that identity, so nothing here logs data that feeds the signature equation; models that
want log inputs (the VAE branch, the Scaden-style peer) apply it internally.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

CPM_SCALE = 1e6
#: linear expression (counts, TPM, CPM) reaches far above this; log2/log1p values stay below it
LOG_SCALE_MAX = 50.0


def cpm(counts, axis: int = 1):
    """Counts per million along ``axis`` (default: rows are samples/cells).

    Works for dense arrays and scipy sparse matrices (returns the same kind). Rows with a zero
    library size raise ``ValueError``: their CPM is undefined.
    """
    if sp.issparse(counts):
        counts = sp.csr_matrix(counts) if axis == 1 else sp.csc_matrix(counts)
        totals = np.asarray(counts.sum(axis=axis)).ravel()
        if np.any(totals <= 0):
            raise ValueError(f"{int((totals <= 0).sum())} samples have zero total counts; CPM undefined")
        scale = sp.diags(CPM_SCALE / totals)
        return (scale @ counts).tocsr() if axis == 1 else (counts @ scale).tocsc()
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=axis, keepdims=True)
    if np.any(totals <= 0):
        raise ValueError(f"{int((totals <= 0).sum())} samples have zero total counts; CPM undefined")
    return counts / totals * CPM_SCALE


def looks_log_scaled(values: np.ndarray) -> bool:
    """Heuristic: expression in linear space (counts, TPM, CPM) reaches values far above 50;
    log1p/log2 data does not (log2(1e6) ≈ 20), and it may be negative."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return False
    return bool(values.min() < 0 or values.max() <= LOG_SCALE_MAX)
