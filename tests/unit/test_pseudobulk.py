import numpy as np
import pytest

from deconflow.io import read_mixtures
from deconflow.pseudobulk import (
    MixtureSettings,
    cells_per_type,
    make_pseudobulk,
    naive_pseudobulk,
    pseudobulk_for_split,
    sample_proportions,
)


def test_proportions_are_exactly_what_was_sampled(marker_reference):
    ref = marker_reference
    types = ref.cell_types
    settings = MixtureSettings(n_mixtures=200, cells_per_mixture=50)
    cpm, props = make_pseudobulk(ref.counts, ref.labels, types, settings, seed=3)
    # every cell contributes 10 counts of its marker and nothing else: marker CPM / 1e6 = cell fraction
    np.testing.assert_allclose(cpm[:, : len(types)] / 1e6, props, atol=1e-6)
    np.testing.assert_allclose(props.sum(axis=1), 1.0)
    np.testing.assert_allclose(props * settings.cells_per_mixture, np.round(props * settings.cells_per_mixture), atol=1e-9)


def test_half_sparse_half_dense_and_no_log(marker_reference):
    ref = marker_reference
    settings = MixtureSettings(n_mixtures=100, cells_per_mixture=400, sparse_fraction=0.5, max_present=2)
    cpm, props = make_pseudobulk(ref.counts, ref.labels, ref.cell_types, settings, seed=1)
    n_present = (props > 0).sum(axis=1)
    assert np.all(n_present[50:] <= 2)
    assert np.mean(n_present[:50] == 4) > 0.9  # Dirichlet(1) with 400 cells: almost always all present
    np.testing.assert_allclose(cpm.sum(axis=1), 1e6, rtol=1e-5)
    assert cpm.dtype == np.float32 and cpm.max() > 50  # linear CPM, not log


def test_seeded_and_matches_counts():
    rng = np.random.default_rng(5)
    props = sample_proportions(30, 5, rng, MixtureSettings(n_mixtures=30))
    counts = cells_per_type(props, 77)
    assert np.all(counts.sum(axis=1) == 77)
    assert np.all(np.abs(counts - props * 77) < 1.0)


def test_deterministic(marker_reference):
    ref = marker_reference
    s = MixtureSettings(n_mixtures=20, cells_per_mixture=30)
    a = make_pseudobulk(ref.counts, ref.labels, ref.cell_types, s, seed=9)
    b = make_pseudobulk(ref.counts, ref.labels, ref.cell_types, s, seed=9)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_naive_loop_gives_the_same_proportions(marker_reference):
    ref = marker_reference
    s = MixtureSettings(n_mixtures=15, cells_per_mixture=40)
    cpm_fast, props_fast = make_pseudobulk(ref.counts, ref.labels, ref.cell_types, s, seed=2)
    cpm_naive, props_naive = naive_pseudobulk(ref.counts, ref.labels, ref.cell_types, s, seed=2)
    np.testing.assert_array_equal(props_fast, props_naive)
    np.testing.assert_allclose(cpm_naive[:, :4] / 1e6, props_naive, atol=1e-6)


def test_split_file_has_provenance_and_refuses_missing_type(marker_reference, tmp_path):
    ref = marker_reference
    source = tmp_path / "ref.h5ad"
    source.write_bytes(b"stand-in source for the checksum")
    ref.path = str(source)
    splits = np.where(np.arange(len(ref.labels)) % 2 == 0, "train", "test")
    out = tmp_path / "train.h5"
    pseudobulk_for_split(ref, splits, "train", MixtureSettings(n_mixtures=5, cells_per_mixture=10), 1, out)
    mix = read_mixtures(out)
    assert mix.attrs["normalization"] == "cpm" and mix.attrs["log_transformed"] is False
    assert mix.attrs["source_checksum"].startswith("sha256:")
    assert mix.attrs["generator_settings"]["n_mixtures"] == 5 and mix.attrs["seed"] == 1
    only_one_type = np.where(ref.labels == "type0", "val", "train")
    with pytest.raises(Exception, match="no cells in the val split"):
        pseudobulk_for_split(ref, only_one_type, "val", MixtureSettings(n_mixtures=5), 1, tmp_path / "val.h5")
    assert not (tmp_path / "val.h5").exists()


def test_dense_and_sparse_summation_paths_are_bit_identical(marker_reference, monkeypatch):
    """The BLAS path must give exactly the sparse product's CPM (integer sums are exact)."""
    import deconflow.pseudobulk as pseudobulk

    ref = marker_reference
    s = MixtureSettings(n_mixtures=30, cells_per_mixture=60)
    dense = make_pseudobulk(ref.counts, ref.labels, ref.cell_types, s, seed=4)
    monkeypatch.setattr(pseudobulk, "MAX_DENSE_ENTRIES", 0)
    sparse = make_pseudobulk(ref.counts, ref.labels, ref.cell_types, s, seed=4)
    np.testing.assert_array_equal(dense[0], sparse[0])
    np.testing.assert_array_equal(dense[1], sparse[1])
