"""CPM pseudobulk mixtures with known proportions, built without a per-sample loop.

For N mixtures of C cells each, every sampled cell is one non-zero of a sparse selection matrix
W (N x n_cells); ``W @ counts`` sums the raw counts of all mixtures in one sparse product, and
CPM is taken afterwards. Summing raw counts and then normalising is what a real bulk library is;
the result stays in linear space (no log), so CPM(mixture) = Σ_k p_k · CPM(type_k) holds up to
sampling noise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp

from .normalize import cpm


@dataclass(frozen=True)
class MixtureSettings:
    n_mixtures: int = 1000
    cells_per_mixture: int = 500
    sparse_fraction: float = 0.5  # share of mixtures where only a random subset of types is present
    dirichlet_alpha: float = 1.0
    min_present: int = 1  # sparse mixtures: number of present types drawn uniformly in [min, max]
    max_present: int | None = None  # None: all types - 1

    def as_dict(self) -> dict:
        return asdict(self)


def sample_proportions(n: int, n_types: int, rng: np.random.Generator, settings: MixtureSettings) -> np.ndarray:
    """Target proportions: the first ``n - n_sparse`` rows dense Dirichlet, the rest sparse."""
    n_sparse = int(round(n * settings.sparse_fraction))
    alpha = np.full(n_types, settings.dirichlet_alpha)
    props = rng.dirichlet(alpha, size=n)
    if n_sparse:
        hi = settings.max_present or max(n_types - 1, 1)
        hi = min(hi, n_types)
        lo = min(max(settings.min_present, 1), hi)
        k_present = rng.integers(lo, hi + 1, size=n_sparse)
        # rank random keys per row: the k smallest keys are the present types (vectorised choice)
        keys = rng.random((n_sparse, n_types))
        ranks = keys.argsort(axis=1).argsort(axis=1)
        mask = ranks < k_present[:, None]
        sparse = props[n - n_sparse :] * mask
        props[n - n_sparse :] = sparse / sparse.sum(axis=1, keepdims=True)
    return props


def cells_per_type(proportions: np.ndarray, cells_per_mixture: int) -> np.ndarray:
    """Integer cell numbers per (mixture, type) summing to ``cells_per_mixture`` (largest remainder)."""
    exact = proportions * cells_per_mixture
    counts = np.floor(exact).astype(np.int64)
    remainder = cells_per_mixture - counts.sum(axis=1)
    frac = exact - counts
    order = np.argsort(-frac, axis=1, kind="stable")
    rank = order.argsort(axis=1, kind="stable")
    counts += (rank < remainder[:, None]).astype(np.int64)
    return counts


def selection_matrix(
    n_cells_per_type: np.ndarray, pools: list[np.ndarray], n_cells_total: int, rng: np.random.Generator
) -> sp.csr_matrix:
    """Sparse W (mixtures x cells): W[i, c] = times cell c was drawn for mixture i.

    Cells are drawn with replacement from each type's pool, so small pools (rare types in the
    test split) still make exact proportions.
    """
    n_mix = n_cells_per_type.shape[0]
    rows, cols = [], []
    for k, pool in enumerate(pools):
        need = n_cells_per_type[:, k]
        total = int(need.sum())
        if total == 0:
            continue
        if len(pool) == 0:
            raise ValueError(f"type {k} is requested but its pool has no cells")
        rows.append(np.repeat(np.arange(n_mix), need))
        cols.append(pool[rng.integers(0, len(pool), size=total)])
    rows = np.concatenate(rows)
    cols = np.concatenate(cols)
    data = np.ones(len(rows), dtype=np.float32)
    return sp.csr_matrix((data, (rows, cols)), shape=(n_mix, n_cells_total))  # duplicates are summed


#: a chunk's counts are multiplied as dense float32 BLAS while its dense matrix stays below this
#: many entries (~100 MB); larger chunks keep scipy's sparse product (both exact, see below)
MAX_DENSE_ENTRIES = 25_000_000


def in_memory_chunks(counts: sp.csr_matrix, rows_per_chunk: int | None = None):
    """``(positions, counts)`` chunks of an in-memory matrix (one chunk by default), the form in
    which ``sum_selected_counts`` and ``deconflow.signature.cell_type_means_chunked`` read cells."""
    counts = sp.csr_matrix(counts)
    step = rows_per_chunk or max(1, counts.shape[0])
    for start in range(0, counts.shape[0], step):
        positions = np.arange(start, min(counts.shape[0], start + step))
        yield positions, counts[start : start + step]


def sum_selected_counts(W: sp.csr_matrix, chunks, n_genes: int, cells_per_mixture: int) -> np.ndarray:
    """Raw-count sums of every mixture (dense float64 mixtures x genes), exactly.

    ``chunks``: ``(positions, counts)`` pairs covering the pool's cells (``positions`` are
    columns of W, ``counts`` their cells x genes CSR raw counts), read one at a time, so memory
    is the output plus one chunk whatever the pool's size. Every partial sum is an integer
    below 2**53 in float64, so the result is exact and does not depend on the chunking, the
    summation order or the thread count. A small chunk is multiplied as dense BLAS (float32 when
    every per-gene sum stays below 2**24, where float32 is exact too), a larger one as a scipy
    sparse product.
    """
    W = sp.csc_matrix(W)
    summed = np.zeros((W.shape[0], n_genes), dtype=np.float64)
    for positions, counts in chunks:
        part_w = W[:, positions]
        if part_w.nnz == 0:
            continue
        counts = sp.csr_matrix(counts)
        if counts.shape[0] * n_genes <= MAX_DENSE_ENTRIES:
            max_count = float(counts.max()) if counts.nnz else 0.0
            dtype = np.float32 if max_count * cells_per_mixture < 2**24 else np.float64
            summed += part_w.toarray().astype(dtype) @ counts.toarray().astype(dtype)
            continue
        part = sp.csr_matrix(part_w.astype(np.float64) @ counts.astype(np.float64))
        if part.nnz * 2 > summed.size:
            summed += part.toarray()
        else:  # a CSR product holds each (mixture, gene) once: plain fancy-index addition is exact
            part = part.tocoo()
            summed[part.row, part.col] += part.data
    return summed


def draw_selection(labels: np.ndarray, cell_types: list[str], settings: MixtureSettings, seed: int):
    """The mixtures' selection matrix W (mixtures x pool cells) and true proportions, from the
    pool's labels only (see ``make_pseudobulk``)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels).astype(str)
    pools = [np.flatnonzero(labels == t) for t in cell_types]
    empty = [t for t, p in zip(cell_types, pools) if len(p) == 0]
    if empty:
        raise ValueError(f"no cells of types {empty} in this pool")
    target = sample_proportions(settings.n_mixtures, len(cell_types), rng, settings)
    n_per_type = cells_per_type(target, settings.cells_per_mixture)
    W = selection_matrix(n_per_type, pools, len(labels), rng)
    return W, n_per_type / settings.cells_per_mixture


def make_pseudobulk(
    counts: sp.csr_matrix,
    labels: np.ndarray,
    cell_types: list[str],
    settings: MixtureSettings,
    seed: int,
    chunks=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (CPM float32 mixtures x genes, true proportions float64 mixtures x types).

    The true proportions are the realised cell fractions (cells of each type / cells per
    mixture), i.e. exactly what was sampled. ``counts``: pool cells x genes raw counts (CSR), or
    None when ``chunks`` gives them a few rows at a time: an iterable of ``(positions, counts)``
    pairs over the pool with an ``n_genes`` attribute (``pseudobulk_for_split`` reads the
    reference file so); the result is the same either way.
    """
    W, proportions = draw_selection(labels, cell_types, settings, seed)
    if chunks is None:
        counts = sp.csr_matrix(counts)
        chunks, n_genes = in_memory_chunks(counts), counts.shape[1]
    else:
        n_genes = chunks.n_genes
    summed = sum_selected_counts(W, chunks, n_genes, settings.cells_per_mixture)
    mixtures = cpm(summed).astype(np.float32)
    return mixtures, proportions


def naive_pseudobulk(counts, labels, cell_types, settings: MixtureSettings, seed: int):
    """Per-sample loop version, kept only as the benchmark's point of comparison."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels).astype(str)
    pools = [np.flatnonzero(labels == t) for t in cell_types]
    target = sample_proportions(settings.n_mixtures, len(cell_types), rng, settings)
    n_per_type = cells_per_type(target, settings.cells_per_mixture)
    out = np.zeros((settings.n_mixtures, counts.shape[1]), dtype=np.float64)
    for i in range(settings.n_mixtures):
        chosen = np.concatenate([rng.choice(p, size=n, replace=True) for p, n in zip(pools, n_per_type[i]) if n])
        summed = np.asarray(counts[chosen].sum(axis=0)).ravel()
        out[i] = summed / summed.sum() * 1e6
    return out.astype(np.float32), n_per_type / settings.cells_per_mixture


class _PoolChunks:
    """The pool's counts chunk by chunk: from a ``ReferenceSource`` (read from the file, once) or
    an in-memory ``Reference``."""

    def __init__(self, reference, rows: np.ndarray):
        self.reference, self.rows, self.n_genes = reference, rows, len(reference.genes)

    def __iter__(self):
        if hasattr(self.reference, "chunks"):
            return iter(self.reference.chunks(self.rows))
        return in_memory_chunks(sp.csr_matrix(self.reference.counts)[self.rows])


def pseudobulk_for_split(reference, splits: np.ndarray, split: str, settings: MixtureSettings, seed: int, out_path) -> dict:
    """Make and write the mixtures of one split from its own cells; returns a summary for the log.

    ``reference``: a ``deconflow.io.references.ReferenceSource`` (counts read from the file
    a chunk at a time, one pass) or an in-memory ``deconflow.io.references.Reference``.

    Every reference cell type must have cells in this split (otherwise its proportion could not
    be realised): the error names the type and the fix.
    """
    from . import __version__
    from .errors import DeconflowError
    from .io import file_checksum, write_mixtures

    cell_types = reference.cell_types
    members = splits == split
    labels = reference.labels[members]
    missing = [t for t in cell_types if not np.any(labels == t)]
    if missing:
        raise DeconflowError(
            reference.path,
            f"cell types {missing} have no cells in the {split} split",
            "give these types more cells (or donors), merge them, or drop them from the reference",
        )
    features, proportions = make_pseudobulk(None, labels, cell_types, settings, seed,
                                            chunks=_PoolChunks(reference, np.flatnonzero(members)))
    write_mixtures(
        out_path,
        features,
        proportions,
        reference.genes,
        cell_types,
        [f"{split}_{i:05d}" for i in range(len(features))],
        attrs={
            "normalization": "cpm",
            "log_transformed": False,
            "split": split,
            "source_file": str(reference.path),
            "source_checksum": file_checksum(reference.path),
            "generator_settings": settings.as_dict(),
            "seed": int(seed),
            "n_pool_cells": int(members.sum()),
            "library_version": __version__,
        },
    )
    return {"split": split, "n_mixtures": len(features), "n_genes": features.shape[1], "pool_cells": int(members.sum())}
