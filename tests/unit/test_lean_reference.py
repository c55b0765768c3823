"""The memory-lean reading paths (chunked reference, chunked per-type means and mixture sums,
cells subsampled before reading) give the numbers of the whole-matrix definitions, bit for bit."""

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from deconflow.io import Reference, open_reference, read_mixtures
from deconflow.io.references import _check_counts_chunked, _is_raw_counts, read_any_reference
from deconflow.models.hpvade import _subsample_cells
from deconflow.normalize import cpm
from deconflow.pseudobulk import MixtureSettings, in_memory_chunks, make_pseudobulk, pseudobulk_for_split
from deconflow.signature import cell_type_library_size, cell_type_means_chunked
from deconflow.training import read_training_cells, subsample_rows

TYPES = ["B", "Mono", "NK", "T"]


def _write_reference(path, n_cells=240, n_genes=60, seed=0, labels=None):
    """An int32 CSR h5ad with overdispersed counts (values up to a few hundred)."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(TYPES, size=n_cells) if labels is None else np.asarray(labels)
    counts = rng.negative_binomial(1, 0.3, size=(n_cells, n_genes)) * (rng.random((n_cells, n_genes)) < 0.3)
    counts[:, 0] += 1  # no empty cell
    adata = ad.AnnData(X=sp.csr_matrix(counts.astype(np.int32)),
                       obs=pd.DataFrame({"cell_type": pd.Categorical(labels)}, index=[f"c{i}" for i in range(n_cells)]),
                       var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]))
    adata.write_h5ad(path)
    return path


def test_chunks_equal_the_whole_matrix_read(tmp_path):
    path = _write_reference(tmp_path / "ref.h5ad")
    whole = read_any_reference(path)
    source = open_reference(path)
    rows = np.arange(3, source.n_cells, 7)
    chunks = list(source.chunks(rows, chunk_nnz=200))  # ~10 cells a chunk
    assert len(chunks) > 5
    assert np.array_equal(np.concatenate([p for p, _ in chunks]), np.arange(len(rows)))
    stacked = sp.vstack([c for _, c in chunks]).tocsr()
    assert stacked.dtype == np.float32 and (stacked != whole.counts[rows]).nnz == 0
    assert np.array_equal(source.labels, whole.labels) and np.array_equal(source.cell_ids, whole.cell_ids)


def test_type_means_by_chunked_indicator_product_equal_scipy_means_bit_for_bit(tmp_path):
    path = _write_reference(tmp_path / "ref.h5ad")
    whole = read_any_reference(path)
    source = open_reference(path)
    rows = np.flatnonzero(np.arange(source.n_cells) % 5 != 0)  # a train pool
    labels = source.labels[rows]
    # the definition: mean over the pool's cells of per-cell CPM, the whole pool at once
    cell_cpm = cpm(whole.counts[rows])
    expected = {t: np.asarray(cell_cpm[labels == t].mean(axis=0)).ravel() for t in TYPES}
    for chunk_nnz in (1 << 24, 500, 37):
        signature, totals = cell_type_means_chunked(source.chunks(rows, chunk_nnz=chunk_nnz), labels, source.genes, TYPES)
        for t in TYPES:
            assert signature[t].dtype == expected[t].dtype
            assert np.array_equal(signature[t].to_numpy(), expected[t]), (chunk_nnz, t)
        sizes = cell_type_library_size(whole.counts[rows], labels, TYPES)
        from deconflow.signature import library_size_from_totals

        assert np.array_equal(library_size_from_totals(totals, labels, TYPES).to_numpy(), sizes.to_numpy())


def test_type_means_refuse_a_type_without_cells():
    counts = sp.csr_matrix(np.ones((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="'C'"):
        cell_type_means_chunked(in_memory_chunks(counts), ["A", "B"], ["g0", "g1", "g2"], ["A", "B", "C"])


def test_mixtures_from_the_file_in_chunks_equal_the_in_memory_ones(tmp_path, monkeypatch):
    import deconflow.pseudobulk as pseudobulk
    import deconflow.io.references as formats

    path = _write_reference(tmp_path / "ref.h5ad", n_cells=300)
    whole = read_any_reference(path)
    splits = np.where(np.arange(300) % 3 == 0, "test", "train")
    settings = MixtureSettings(n_mixtures=40, cells_per_mixture=30)
    members = splits == "train"
    expected, props = make_pseudobulk(whole.counts[members], whole.labels[members], TYPES, settings, seed=5)
    monkeypatch.setattr(pseudobulk, "MAX_DENSE_ENTRIES", 0)  # the sparse product, chunk by chunk
    monkeypatch.setattr(formats, "CHUNK_NNZ", 300)
    monkeypatch.setattr(formats.ReferenceSource.chunks, "__defaults__", (None, 300))
    pseudobulk_for_split(open_reference(path), splits, "train", settings, 5, tmp_path / "train.h5")
    mixtures = read_mixtures(tmp_path / "train.h5")
    assert np.array_equal(mixtures.features, expected) and np.array_equal(mixtures.proportions, props)
    # and the old whole-matrix product (dense W @ counts, then CPM)
    W, _ = pseudobulk.draw_selection(whole.labels[members], TYPES, settings, 5)
    summed = (W.toarray().astype(np.float64) @ whole.counts[members].toarray().astype(np.float64))
    assert np.array_equal(cpm(summed).astype(np.float32), expected)


def test_cells_subsampled_before_reading_are_the_old_selection(tmp_path):
    assert np.array_equal(subsample_rows(10, 20, 3), np.arange(10))
    cells = sp.csr_matrix(np.arange(50, dtype=np.float32).reshape(50, 1))
    kept, labels = _subsample_cells(cells, np.arange(50), 12, 7)
    assert np.array_equal(labels, subsample_rows(50, 12, 7))
    path = _write_reference(tmp_path / "ref.h5ad", n_cells=400)
    table = pd.DataFrame({"cell_id": [f"c{i}" for i in range(400)], "cell_type": read_any_reference(path).labels,
                          "split": np.where(np.arange(400) % 4 == 0, "val", "train")})
    table.to_csv(tmp_path / "cells.tsv", sep="\t", index=False)
    features = [f"g{j}" for j in range(0, 60, 3)]
    old = read_training_cells(path, tmp_path / "cells.tsv", features, TYPES)  # every cell, then subsample
    new = read_training_cells(path, tmp_path / "cells.tsv", features, TYPES, max_cells=50, seed=11)
    for k in (0, 2):
        expected_cells, expected_labels = _subsample_cells(old[k], old[k + 1], 50, 11)
        assert new[k].shape == (50, len(features))
        assert np.array_equal(new[k].toarray(), expected_cells.toarray())
        assert np.array_equal(new[k + 1], expected_labels)


@pytest.mark.parametrize("values, verdict", [
    ([1, 2, 3, 0, 7], (True, "")),
    ([1, np.nan, 3, np.inf, -1], (False, "6 NaN/inf values")),  # counted over every chunk
    ([1, 2, -3, 4, 0.5], (False, "negative values")),
    ([1, 2, 3, 4, 0.5], (False, "non-integer values")),
])
def test_chunked_raw_counts_check_agrees_with_the_whole_array_check(tmp_path, values, verdict):
    data = np.array(values * 3, dtype=np.float32)  # 15 values, read 4 at a time
    with h5py.File(tmp_path / "d.h5", "w") as h5:
        h5["data"] = data
        assert _check_counts_chunked(h5["data"], chunk=4) == _is_raw_counts(data) == verdict
        h5["ints"] = np.array(values[:1] * 9 + [-2], dtype=np.int32)
        assert _check_counts_chunked(h5["ints"], chunk=4) == (False, "negative values")


def test_reference_source_of_an_in_memory_reference_chunks_like_the_file():
    ref = Reference(counts=sp.csr_matrix(np.arange(12, dtype=np.float32).reshape(4, 3)), cell_ids=np.array(list("abcd")),
                    genes=np.array(["x", "y", "z"]), labels=np.array(["A", "B", "A", "B"]))
    from deconflow.io.references import ReferenceSource

    source = ReferenceSource.from_reference(ref)
    parts = list(source.chunks(np.array([0, 2, 3]), chunk_nnz=2))
    assert np.array_equal(sp.vstack([c for _, c in parts]).toarray(), ref.counts[[0, 2, 3]].toarray())
