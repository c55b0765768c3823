"""Cell fractions for a bulk whose mRNA content per cell differs from the reference's.

Every RNA model estimates *cell* fractions calibrated to its reference: the signature fits
convert mRNA shares with the per-type mean library size L_k of the train pool (``models.nnls``),
and the learned models learn the same conversion from pseudobulk truth. For pseudobulk of that
reference L_k is exactly right. A real bulk from another protocol carries each type's mRNA in
proportion to its true mRNA content per cell c_k, which a 10x 3' UMI count does not measure
(capture differs between cell types: in the embedded PBMC reference a monocyte has 1.9x the UMIs
of a T cell, while purified blood monocytes hold about 3.6x the mRNA of T cells, Racle et al.
2017). With mRNA share m_k ∝ p_k·c_k in the bulk, a model's output p̂_k ∝ m_k / L_k becomes

    p_k ∝ p̂_k · L_k / c_k

(rows renormalised). MuSiC, Rectangle and EPIC apply such per-type sizes; EPIC ships measured
values for the main blood types. A bulk's ``cell_mrna`` table gives c_k (any unit: only ratios
matter). A type it does not list takes its ``default`` row if there is one; otherwise it keeps
the reference's size, in the table's units (c_k = L_k · geometric mean of c_j / L_j over the
listed types): no value is invented for a type nobody measured (plasma cells, platelets).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DeconflowError
from .io.tables import read_table

#: Row of a ``cell_mrna`` table used for reference types the table does not list.
DEFAULT_ROW = "default"


def read_cell_mrna(path: str | Path, cell_types) -> np.ndarray:
    """mRNA content per cell of each of ``cell_types`` from a two-column TSV (cell_type, value);
    NaN for a type the table lists neither by name nor through a ``default`` row.

    Every value must be positive and finite; every name must be a reference type or ``default``
    (a misspelt type would otherwise silently fall back).
    """
    path = Path(path)
    if not path.is_file():
        raise DeconflowError(path, "cell_mrna table not found", "give a TSV with columns cell_type and mrna_per_cell")
    table = read_table(path, "cell_mrna table", "give a TSV with columns cell_type and mrna_per_cell", header=True, comment="#")
    if table.shape[1] != 2 or table.shape[0] == 0:
        raise DeconflowError(path, f"expected 2 columns (cell_type, mrna_per_cell) and at least one row, found {table.shape[1]} columns "
                                   f"and {table.shape[0]} rows", "give one row per cell type: name<TAB>mRNA per cell")
    names = table.iloc[:, 0].astype(str).str.strip()
    values = pd.to_numeric(table.iloc[:, 1].str.strip().str.replace(",", ".", regex=False), errors="coerce").to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        bad = names[~(np.isfinite(values) & (values > 0))].tolist()
        raise DeconflowError(path, f"mRNA per cell of {bad} is not a positive number", "give a positive value for every row")
    if names.duplicated().any():
        raise DeconflowError(path, f"cell types listed twice: {sorted(set(names[names.duplicated()]))}", "keep one row per cell type")
    cell_types = [str(t) for t in cell_types]
    unknown = sorted(set(names) - set(cell_types) - {DEFAULT_ROW})
    if unknown:
        raise DeconflowError(path, f"{unknown} are not cell types of the model", f"use the model's names {cell_types} (or `{DEFAULT_ROW}`)")
    content = dict(zip(names, values))
    if not set(content) & set(cell_types) and DEFAULT_ROW not in content:
        raise DeconflowError(path, "lists none of the model's cell types", f"use the model's names {cell_types}")
    return np.array([content.get(t, content.get(DEFAULT_ROW, np.nan)) for t in cell_types], dtype=np.float64)


def to_bulk_cell_fractions(proportions: np.ndarray, reference_size: np.ndarray, bulk_content: np.ndarray) -> np.ndarray:
    """Reference-calibrated cell fractions → the bulk's: p_k ∝ p̂_k · L_k / c_k, rows summing to 1.

    NaN contents (types the table does not list) keep the reference's size in the table's units,
    i.e. the geometric mean factor of the listed types. An all-zero row stays as it is.
    """
    p = np.atleast_2d(np.asarray(proportions, dtype=np.float64))
    factor = np.asarray(reference_size, dtype=np.float64) / np.asarray(bulk_content, dtype=np.float64)
    listed = np.isfinite(factor)
    factor = np.where(listed, factor, np.exp(np.log(factor[listed]).mean()))
    q = p * factor[None, :]
    totals = q.sum(axis=1, keepdims=True)
    return np.where(totals > 0, q / np.where(totals > 0, totals, 1.0), p)


def reference_cell_size(signature: pd.DataFrame) -> dict | None:
    """{cell type: mean library size of the train pool} stored in a checkpoint's provenance, so
    that ``cell_mrna`` can be applied to any model's output later (None if the signature has none)."""
    sizes = signature.attrs.get("cell_library_size")
    if sizes is None:
        return None
    return {str(t): float(s) for t, s in zip(signature.columns, np.asarray(sizes, dtype=np.float64))}


def checkpoint_cell_size(checkpoint: dict, source) -> np.ndarray:
    """The per-type reference library sizes a checkpoint was trained with, in its type order."""
    sizes = (checkpoint.get("provenance") or {}).get("reference_cell_size")
    if not sizes:
        raise DeconflowError(source, "the checkpoint does not record its reference's library size per cell type, "
                                     "which `cell_mrna` needs", "retrain the model with this version of deconflow")
    return np.array([sizes[str(t)] for t in checkpoint["cell_types"]], dtype=np.float64)
