"""Split reference cells into train / val / test pools.

Mixtures for each split are built only from that split's cells, so test mixtures never share a
cell with training mixtures. With a donor key, whole donors are held out instead, which is how
users validate transfer to new individuals.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import DeconflowError
from .io.tables import read_table

SPLITS = ("train", "val", "test")


def _allocate(n: int, fractions: np.ndarray, minimum: int) -> np.ndarray:
    """Integer sizes summing to n, proportional to fractions, each ≥ minimum when n allows."""
    sizes = np.floor(fractions * n).astype(int)
    remainder = n - sizes.sum()
    order = np.argsort(-(fractions * n - sizes), kind="stable")
    sizes[order[:remainder]] += 1
    for i in range(len(sizes)):  # top up small splits by taking from the largest one
        while sizes[i] < minimum and sizes.max() > minimum:
            sizes[int(np.argmax(sizes))] -= 1
            sizes[i] += 1
    return sizes


def split_cells(
    labels: np.ndarray,
    fractions: dict[str, float],
    seed: int,
    donors: np.ndarray | None = None,
    min_cells_per_split: int = 1,
    source: str | None = None,
) -> np.ndarray:
    """Return one split name per cell.

    Without donors: stratified per cell type, every type gets ≥ ``min_cells_per_split`` cells in
    every split (an error says which type is too small otherwise). With donors: donors are
    shuffled and assigned to splits by the fractions (at least one donor per split).
    """
    labels = np.asarray(labels).astype(str)
    frac = np.array([float(fractions[s]) for s in SPLITS])
    if np.any(frac <= 0) or not np.isclose(frac.sum(), 1.0):
        raise DeconflowError(None, f"split fractions {fractions} must be positive and sum to 1", "fix `split` in the config")
    rng = np.random.default_rng(seed)
    out = np.empty(len(labels), dtype=object)
    if donors is not None:
        donors = np.asarray(donors).astype(str)
        unique = np.array(sorted(set(donors)))
        if len(unique) < 3:
            raise DeconflowError(
                source, f"only {len(unique)} donors; a donor split needs at least 3", "set `donor_key: null` to split cells instead"
            )
        rng.shuffle(unique)
        sizes = _allocate(len(unique), frac, 1)
        bounds = np.cumsum(sizes)[:-1]
        for split, group in zip(SPLITS, np.split(unique, bounds)):
            out[np.isin(donors, group)] = split
        return out.astype(str)
    need = min_cells_per_split * len(SPLITS)
    counts = pd.Series(labels).value_counts()
    small = counts[counts < need]
    if len(small):
        raise DeconflowError(
            source,
            f"cell types with fewer than {need} cells (needed for {min_cells_per_split} per split): {small.to_dict()}",
            "drop or merge these cell types in the reference, or lower `split.min_cells_per_split`",
        )
    for cell_type in sorted(counts.index):
        idx = np.flatnonzero(labels == cell_type)
        idx = idx[rng.permutation(len(idx))]
        sizes = _allocate(len(idx), frac, min_cells_per_split)
        bounds = np.cumsum(sizes)[:-1]
        for split, part in zip(SPLITS, np.split(idx, bounds)):
            out[part] = split
    return out.astype(str)


def read_split(path, reference_cell_ids) -> np.ndarray:
    """Split name per reference cell, in reference order (from split_reference's cells.tsv)."""
    table = read_table(path, "split table", "rerun `snakemake --forcerun split_reference`", header=True)
    mapping = pd.Series(table["split"].to_numpy(), index=table["cell_id"].to_numpy())
    missing = pd.Index(reference_cell_ids).difference(mapping.index)
    if len(missing):
        raise DeconflowError(
            path,
            f"{len(missing)} reference cells have no split (e.g. {list(missing[:3])})",
            "the reference changed after splitting; rerun `snakemake --forcerun split_reference`",
        )
    return mapping.loc[list(reference_cell_ids)].to_numpy().astype(str)
