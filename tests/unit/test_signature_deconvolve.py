"""Signature building, marker selection, aligning real bulk to a model, and end-to-end NNLS
deconvolution of a bulk file with missing genes."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from deconflow.deconvolve import align_bulk, deconvolve_file
from deconflow.errors import DeconflowError
from deconflow.models import save_checkpoint
from deconflow.models.nnls import NNLSModel
from deconflow.signature import cell_type_mean_cpm, select_marker_genes


# --------------------------------------------------------------------------- signature
def test_cell_type_mean_cpm_is_mean_of_per_cell_cpm():
    counts = sp.csr_matrix(
        np.array(
            [
                [1, 3, 0],  # A, library 4 -> CPM (250000, 750000, 0)
                [0, 0, 5],  # B, library 5 -> CPM (0, 0, 1e6)
                [2, 0, 0],  # A, library 2 -> CPM (1e6, 0, 0)
                [1, 0, 1],  # B, library 2 -> CPM (500000, 0, 500000)
            ],
            dtype=np.float32,
        )
    )
    labels = np.array(["A", "B", "A", "B"])
    signature = cell_type_mean_cpm(counts, labels, ["g0", "g1", "g2"], ["B", "A"])
    assert signature.columns.tolist() == ["B", "A"]  # in the order asked for
    assert signature.index.tolist() == ["g0", "g1", "g2"]
    np.testing.assert_allclose(signature["A"], [625000, 375000, 0])
    np.testing.assert_allclose(signature["B"], [250000, 0, 750000])
    # mean of CPM, not CPM of pooled counts (which would be 500000, 500000, 0 for A)
    assert not np.allclose(signature["A"], [500000, 500000, 0])
    np.testing.assert_allclose(signature.sum(axis=0), 1e6)


def test_cell_type_mean_cpm_raises_for_type_without_cells():
    counts = sp.csr_matrix(np.ones((2, 2)))
    with pytest.raises(ValueError, match="'C'"):
        cell_type_mean_cpm(counts, ["A", "B"], ["g0", "g1"], ["A", "B", "C"])


def test_cell_type_mean_cpm_on_marker_reference(marker_reference):
    ref = marker_reference
    signature = cell_type_mean_cpm(ref.counts, ref.labels, ref.genes, ref.cell_types)
    # every cell has only its marker's 10 counts -> the marker is 1e6 CPM in its type, 0 elsewhere
    for k, cell_type in enumerate(ref.cell_types):
        expected = np.zeros(len(ref.genes))
        expected[list(ref.genes).index(f"marker{cell_type[-1]}")] = 1e6
        np.testing.assert_allclose(signature[cell_type].to_numpy(), expected)


def test_select_marker_genes_keeps_type_specific_genes():
    signature = pd.DataFrame(
        {
            "A": [900.0, 10.0, 60.0, 100.0, 500.0, 0.0],
            "B": [10.0, 800.0, 60.0, 100.0, 500.0, 0.0],
            "C": [10.0, 10.0, 100.0, 100.0, 10.0, 0.9],
        },
        index=["markerA", "markerB", "markerC", "housekeeping", "sharedAB", "lowC"],
    )
    chosen = select_marker_genes(signature, n_per_type=1, min_mean_cpm=1.0)
    # lowC is the most specific to C (log1p(0.9) - 0 = 0.64 > log(101/61) = 0.50) but is below
    # the 1 CPM floor; housekeeping and sharedAB are not specific to one type.
    assert chosen.index.tolist() == ["markerA", "markerB", "markerC"]
    pd.testing.assert_frame_equal(chosen, signature.loc[["markerA", "markerB", "markerC"]])  # linear rows
    without_floor = select_marker_genes(signature, n_per_type=1, min_mean_cpm=0.0)
    assert without_floor.index.tolist() == ["markerA", "markerB", "lowC"]


def test_select_marker_genes_n_per_type_bounds_the_size():
    rng = np.random.default_rng(6)
    signature = pd.DataFrame(rng.uniform(1, 1000, size=(50, 4)), columns=list("ABCD"))
    chosen = select_marker_genes(signature, n_per_type=3)
    assert 3 <= len(chosen) <= 12
    assert chosen.index.is_unique
    for k, cell_type in enumerate("ABCD"):  # each type's best-ratio gene is kept
        others = np.log1p(signature.drop(columns=cell_type)).max(axis=1)
        best = (np.log1p(signature[cell_type]) - others).idxmax()
        assert best in chosen.index


# --------------------------------------------------------------------------- align_bulk
@pytest.fixture
def small_model():
    rng = np.random.default_rng(7)
    genes = [f"g{i}" for i in range(10)]
    signature = pd.DataFrame(rng.uniform(10, 1000, size=(10, 3)), index=genes, columns=["T", "B", "NK"])
    return NNLSModel(signature, normalization="cpm")


def test_align_bulk_reports_shared_genes_and_renormalises_over_them(small_model):
    rng = np.random.default_rng(8)
    index = ["g3", "extra1", "g0", "g1", "g2", "extra2", "g4", "g5", "g6"]  # g7..g9 missing
    bulk = pd.DataFrame(rng.uniform(100, 5000, size=(len(index), 2)), index=index, columns=["s1", "s2"])
    features, n_shared = align_bulk(bulk, small_model, min_overlap=5)
    assert n_shared == 7
    assert features.shape == (2, 10)
    assert np.isnan(features[:, 7:]).all()
    shared = [f"g{i}" for i in range(7)]
    observed = features[:, :7]
    np.testing.assert_allclose(observed.sum(axis=1), 1e6)  # CPM over shared genes only
    expected = bulk.loc[shared].to_numpy().T
    expected = expected / expected.sum(axis=1, keepdims=True) * 1e6
    np.testing.assert_allclose(observed, expected)


def test_align_bulk_refuses_log_scaled_input(small_model):
    rng = np.random.default_rng(9)
    bulk = pd.DataFrame(rng.uniform(0, 14, size=(10, 2)), index=[f"g{i}" for i in range(10)], columns=["s1", "s2"])
    with pytest.raises(DeconflowError) as info:
        align_bulk(bulk, small_model, min_overlap=5, source="bulk.tsv")
    message = str(info.value)
    assert message.startswith("bulk.tsv: ")
    assert "log-scaled" in message and "undo the log transform" in message


def test_align_bulk_refuses_overlap_below_minimum(small_model):
    bulk = pd.DataFrame(
        np.full((5, 1), 1000.0), index=["g0", "g1", "ENSG01", "ENSG02", "g2"], columns=["s1"]
    )
    with pytest.raises(DeconflowError) as info:
        align_bulk(bulk, small_model, min_overlap=4, source="bulk.tsv")
    message = str(info.value)
    assert "only 3 of 10" in message and "at least 4" in message
    assert "gene identifiers" in message and "min_feature_overlap" in message
    features, n_shared = align_bulk(bulk, small_model, min_overlap=3)  # at the minimum it passes
    assert n_shared == 3


def test_align_bulk_beta_range_checked():
    atlas = pd.DataFrame(np.full((4, 2), 0.5), index=list("abcd"), columns=["liver", "blood"])
    model = NNLSModel(atlas, normalization="beta")
    betas = pd.DataFrame([[0.2], [0.7], [0.4], [1.0]], index=list("abcd"), columns=["s1"])
    features, _ = align_bulk(betas, model, min_overlap=4)
    np.testing.assert_array_equal(features, betas.to_numpy().T)  # used as they are
    with pytest.raises(DeconflowError, match=r"outside \[0, 1\]"):
        align_bulk(betas * 100, model, min_overlap=4)


# --------------------------------------------------------------------------- deconvolve_file
def test_deconvolve_file_recovers_mixture_with_30_percent_genes_missing(tmp_path):
    rng = np.random.default_rng(10)
    n_genes, n_types, n_samples = 300, 5, 4
    genes = [f"ENSG{i:05d}" for i in range(n_genes)]
    types = ["T", "B", "NK", "Mono", "DC"]
    raw = rng.gamma(0.5, 1.0, size=(n_genes, n_types))
    signature = pd.DataFrame(raw / raw.sum(axis=0) * 1e6, index=genes, columns=types)  # CPM columns
    proportions = rng.dirichlet(np.ones(n_types), size=n_samples)
    proportions[0, [1, 3]] = 0.0
    proportions[2, 4] = 0.0
    proportions /= proportions.sum(axis=1, keepdims=True)
    bulk_all = signature.to_numpy() @ proportions.T  # CPM over all genes (columns sum to 1e6)
    sample_ids = [f"patient{i}" for i in range(n_samples)]
    bulk = pd.DataFrame(bulk_all, index=genes, columns=sample_ids)
    kept = np.sort(rng.choice(n_genes, size=int(0.7 * n_genes), replace=False))
    bulk = bulk.iloc[kept].iloc[rng.permutation(len(kept))]  # 30 % of genes gone, rows shuffled
    bulk_path = tmp_path / "bulk.tsv"
    bulk.to_csv(bulk_path, sep="\t")
    # the bulk on the remaining genes no longer sums to 1e6: align_bulk rescales it per sample
    assert not np.allclose(bulk.sum(axis=0), 1e6)

    model_path = tmp_path / "checkpoint_best.pt"
    save_checkpoint(NNLSModel(signature, normalization="cpm").checkpoint(), model_path)
    out_path = tmp_path / "out" / "proportions.csv"
    table = deconvolve_file(model_path, bulk_path, out_path, min_overlap=200)

    assert table.index.tolist() == sample_ids
    assert table.columns.tolist() == types
    np.testing.assert_allclose(table.to_numpy(), proportions, atol=1e-6)
    written = pd.read_csv(out_path, index_col=0)
    assert written.index.name == "sample_id"
    np.testing.assert_allclose(written.to_numpy(), proportions, atol=1e-6)


def test_deconvolve_file_overlap_error_names_bulk_file(tmp_path):
    signature = pd.DataFrame(np.eye(3) * 1e6, index=["a", "b", "c"], columns=["X", "Y", "Z"])
    model_path = tmp_path / "model.pt"
    save_checkpoint(NNLSModel(signature).checkpoint(), model_path)
    bulk_path = tmp_path / "bulk.tsv"
    pd.DataFrame({"s1": [100.0, 200.0]}, index=["a", "q"]).to_csv(bulk_path, sep="\t")
    with pytest.raises(DeconflowError) as info:
        deconvolve_file(model_path, bulk_path, tmp_path / "out.csv", min_overlap=2)
    assert str(bulk_path) in str(info.value)
    assert not (tmp_path / "out.csv").exists()


def test_methylation_bulk_with_uncovered_regions_is_deconvolved(tmp_path):
    """Beta bulk files may have NaN (no reads): NNLS uses the covered regions only."""
    import numpy as np
    import pandas as pd

    from deconflow.deconvolve import deconvolve_file
    from deconflow.models import save_checkpoint
    from deconflow.models.nnls import NNLSModel

    rng = np.random.default_rng(4)
    atlas = pd.DataFrame(rng.random((300, 5)), index=[f"r{i}" for i in range(300)], columns=list("abcde"))
    truth = np.array([0.5, 0.0, 0.3, 0.2, 0.0])
    betas = atlas.to_numpy() @ truth
    betas[rng.choice(300, 40, replace=False)] = np.nan
    bulk = tmp_path / "bulk.tsv"
    pd.DataFrame({"s1": betas}, index=atlas.index).to_csv(bulk, sep="\t")
    ckpt = tmp_path / "nnls.pt"
    save_checkpoint(NNLSModel(atlas, normalization="beta").checkpoint(), ckpt)
    table = deconvolve_file(ckpt, bulk, tmp_path / "out.csv", min_overlap=100)
    np.testing.assert_allclose(table.loc["s1"].to_numpy(), truth, atol=1e-6)
