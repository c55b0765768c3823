"""The linear fit of NNLS and of HP-VADE's NNLS prior: cell fractions from per-type library
sizes, gene weights and marker genes (config ``linear_fit``)."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from deconflow.io import MixtureSet, read_signature, write_table
from deconflow.models import load_model, save_checkpoint
from deconflow.models.hpvade import DEFAULTS as HPVADE_DEFAULTS
from deconflow.models.hpvade import build_net
from deconflow.models.nnls import cell_fractions, fit, linear_fit_design
from deconflow.pseudobulk import MixtureSettings, make_pseudobulk
from deconflow.signature import cell_type_library_size, cell_type_mean_cpm

N_GENES, N_TYPES = 60, 4
LIBRARY_SIZES = [900, 1800, 3500, 10000]  # platelet-, T-cell-, monocyte-, plasma-cell-like
ALL_GENES_UNWEIGHTED = {"marker_genes_per_type": None, "weight_offset_cpm": None, "cell_fractions": True}


@pytest.fixture
def sized_reference():
    """Cells whose counts are identical within a type but whose totals differ 10-fold between
    types: the mean-CPM signature and the per-type library size are then exact, so a noise-free
    pseudobulk of these cells is exactly Σ_k m_k·S_k with mRNA shares m_k ∝ n_k·L_k."""
    rng = np.random.default_rng(5)
    profiles = rng.dirichlet(np.full(N_GENES, 0.5), size=N_TYPES)
    rows, labels = [], []
    for k, size in enumerate(LIBRARY_SIZES):
        counts = np.floor(profiles[k] * size)
        counts[np.argmax(counts)] += size - counts.sum()  # integer counts summing to exactly L_k
        rows += [counts] * 20
        labels += [f"type{k}"] * 20
    counts = sp.csr_matrix(np.array(rows, dtype=np.float32))
    labels = np.array(labels)
    genes = np.array([f"g{i}" for i in range(N_GENES)])
    types = [f"type{k}" for k in range(N_TYPES)]
    signature = cell_type_mean_cpm(counts, labels, genes, types)
    sizes = cell_type_library_size(counts, labels, types)
    mixtures, proportions = make_pseudobulk(counts, labels, types, MixtureSettings(n_mixtures=12, cells_per_mixture=100), seed=3)
    return signature, sizes, MixtureSet(mixtures, proportions, genes, np.array(types), np.arange(12).astype(str), {"normalization": "cpm"})


def test_library_size_is_the_mean_total_count_per_type(sized_reference):
    _, sizes, _ = sized_reference
    np.testing.assert_allclose(sizes.to_numpy(), LIBRARY_SIZES)


def test_cell_fractions_recover_a_noise_free_pseudobulk_of_unequal_cells_exactly(sized_reference):
    signature, sizes, mixtures = sized_reference
    signature.attrs["cell_library_size"] = sizes
    model = fit(mixtures, None, signature, {"linear_fit": ALL_GENES_UNWEIGHTED})
    np.testing.assert_allclose(model.predict(mixtures.features), mixtures.proportions, atol=1e-5)


def test_without_conversion_nnls_gives_mrna_fractions_not_cell_fractions(sized_reference):
    signature, sizes, mixtures = sized_reference
    signature.attrs["cell_library_size"] = sizes
    model = fit(mixtures, None, signature, {"linear_fit": {**ALL_GENES_UNWEIGHTED, "cell_fractions": False}})
    mrna = mixtures.proportions * np.array(LIBRARY_SIZES)
    mrna /= mrna.sum(axis=1, keepdims=True)
    predicted = model.predict(mixtures.features)
    np.testing.assert_allclose(predicted, mrna, atol=1e-5)
    assert np.abs(predicted - mixtures.proportions).max() > 0.05  # the conversion matters here
    np.testing.assert_allclose(cell_fractions(predicted, LIBRARY_SIZES), mixtures.proportions, atol=1e-5)


def test_gene_weights_and_markers_recover_a_noise_free_mixture_exactly(sized_reference):
    signature, sizes, mixtures = sized_reference
    signature.attrs["cell_library_size"] = sizes
    settings = {"marker_genes_per_type": 8, "weight_offset_cpm": 10.0, "cell_fractions": True}
    rows, weights = linear_fit_design(signature, settings)
    assert len(rows) < N_GENES and weights.max() == pytest.approx(1.0) and weights.min() < 0.01
    model = fit(mixtures, None, signature, {"linear_fit": settings})
    np.testing.assert_allclose(model.predict(mixtures.features), mixtures.proportions, atol=1e-5)


def test_gene_weights_stop_one_corrupted_highly_expressed_gene_from_dominating(sized_reference):
    """A platform change that inflates the most expressed gene 5-fold ruins unweighted NNLS;
    relative (weighted) residuals keep the estimate close. Fails if the weights are ignored."""
    signature, sizes, mixtures = sized_reference
    signature.attrs["cell_library_size"] = sizes
    corrupted = mixtures.features.astype(np.float64).copy()
    top = int(np.argmax(signature.to_numpy().mean(axis=1)))
    corrupted[:, top] *= 5.0
    errors = {}
    for offset in (None, 1.0):
        model = fit(mixtures, None, signature, {"linear_fit": {**ALL_GENES_UNWEIGHTED, "weight_offset_cpm": offset}})
        errors[offset] = np.abs(model.predict(corrupted) - mixtures.proportions).mean()
    assert errors[1.0] < errors[None] / 3


def test_missing_genes_are_dropped_and_checkpoint_round_trip_keeps_the_design(sized_reference, tmp_path):
    signature, sizes, mixtures = sized_reference
    signature.attrs["cell_library_size"] = sizes
    model = fit(mixtures, None, signature, {"linear_fit": {"marker_genes_per_type": 10, "weight_offset_cpm": 3.0}})
    features = mixtures.features.astype(np.float64).copy()
    features[:, ::7] = np.nan  # genes the bulk lacks
    save_checkpoint(model.checkpoint(), tmp_path / "nnls.pt")
    loaded = load_model(tmp_path / "nnls.pt")
    np.testing.assert_array_equal(loaded.predict_partial(features), model.predict_partial(features))
    np.testing.assert_allclose(loaded.predict_partial(features), mixtures.proportions, atol=1e-5)


def test_read_signature_attaches_the_library_sizes_written_beside_it(sized_reference, tmp_path):
    signature, sizes, _ = sized_reference
    write_table(signature, tmp_path / "signature.tsv")
    assert "cell_library_size" not in read_signature(tmp_path / "signature.tsv").attrs
    write_table(sizes.to_frame(), tmp_path / "cell_library_size.tsv")
    read = read_signature(tmp_path / "signature.tsv")
    np.testing.assert_allclose(read.attrs["cell_library_size"].to_numpy(), LIBRARY_SIZES)


def test_hpvade_prior_solves_the_same_weighted_cell_fraction_fit_as_nnls(sized_reference):
    signature, sizes, mixtures = sized_reference
    signature.attrs["cell_library_size"] = sizes
    linear_fit = {"marker_genes_per_type": 10, "weight_offset_cpm": 10.0, "cell_fractions": True}
    settings = {**HPVADE_DEFAULTS, "hidden_sizes": [8], "vae_hidden": 8, "n_input_genes": 0, "linear_fit": linear_fit,
                "prior_iterations": 3000}
    net = build_net(mixtures.features, signature, settings)
    prior = net.nnls_prior(torch.as_tensor(mixtures.features, dtype=torch.float32)).double().numpy()
    expected = fit(mixtures, None, signature, {"linear_fit": linear_fit}).predict(mixtures.features)
    np.testing.assert_allclose(prior, expected, atol=2e-3)
    np.testing.assert_allclose(prior, mixtures.proportions, atol=2e-3)


def test_marker_set_ensemble_is_the_mean_of_its_single_fits_and_recovers_a_noise_free_mixture(sized_reference):
    """Lists of marker counts and thresholds give one design per pair; the prediction averages the
    designs' mRNA shares (then converts to cells), so a noise-free mixture is still exact."""
    signature, sizes, mixtures = sized_reference
    signature.attrs["cell_library_size"] = sizes
    ensemble = {"marker_genes_per_type": [4, 8], "min_marker_cpm": [1.0, 50.0], "weight_offset_cpm": 10.0, "cell_fractions": False}
    rows, weights = linear_fit_design(signature, ensemble)
    assert weights.shape == (4, len(rows))
    assert ((weights > 0).sum(axis=1) < len(rows)).any()  # designs differ in their genes
    model = fit(mixtures, None, signature, {"linear_fit": ensemble})
    singles = [fit(mixtures, None, signature, {"linear_fit": {**ensemble, "marker_genes_per_type": n, "min_marker_cpm": c}})
               for n in (4, 8) for c in (1.0, 50.0)]
    noisy = mixtures.features * np.random.default_rng(3).lognormal(0, 0.3, size=mixtures.features.shape)
    np.testing.assert_allclose(model.predict(noisy), np.mean([m.predict(noisy) for m in singles], axis=0), atol=1e-12)
    mrna = mixtures.proportions * np.array(LIBRARY_SIZES)
    np.testing.assert_allclose(model.predict(mixtures.features), mrna / mrna.sum(axis=1, keepdims=True), atol=1e-5)


def _cap_case():
    """A 4-type signature of 200 genes (each type 50 specific genes) and a mixture whose one
    weakly type-3 gene is 1,000x what the mixture holds (a protocol effect no proportions explain)."""
    rng = np.random.default_rng(3)
    values = rng.gamma(2.0, 20.0, size=(200, 4))
    for k in range(4):
        values[k * 50 : (k + 1) * 50, k] *= 8.0
    values = values / values.sum(axis=0) * 1e6
    signature = pd.DataFrame(values, index=[f"g{i}" for i in range(200)], columns=[f"type{k}" for k in range(4)])
    truth = np.array([0.4, 0.3, 0.2, 0.1])
    clean = values @ truth
    shifted = clean.copy()
    outlier = 150 + int(np.argmin(values[150:, 3] / values[150:, :3].max(axis=1)))  # type 3's weakest marker
    shifted[outlier] *= 1000.0
    return signature, truth, clean, shifted


@pytest.mark.parametrize("cap", [None, 30.0])
def test_noise_free_mixture_is_recovered_exactly_with_or_without_the_cap(cap):
    signature, truth, clean, _ = _cap_case()
    rows, weights = linear_fit_design(signature, {"marker_genes_per_type": [20, 40], "min_marker_cpm": [1.0], "weight_offset_cpm": 10.0})
    from deconflow.models.nnls import NNLSModel

    model = NNLSModel(signature, rows=rows, weights=weights, max_bulk_ratio=cap)
    assert model.bulk_factors(clean[None, :]) is None  # no mixture exceeds its purest type
    np.testing.assert_allclose(model.predict(clean[None, :])[0], truth, atol=1e-9)


def test_a_gene_beyond_any_mixture_is_capped_not_followed():
    signature, truth, _, shifted = _cap_case()
    rows, weights = linear_fit_design(signature, {"marker_genes_per_type": [50], "min_marker_cpm": [1.0], "weight_offset_cpm": 10.0})
    from deconflow.models.nnls import NNLSModel

    uncapped = NNLSModel(signature, rows=rows, weights=weights, max_bulk_ratio=None).predict(shifted[None, :])[0]
    capped_model = NNLSModel(signature, rows=rows, weights=weights, max_bulk_ratio=30.0)
    factors = capped_model.bulk_factors(shifted[None, :])
    assert factors is not None and (factors < 1).sum() == 1  # exactly the one gene
    capped = capped_model.predict(shifted[None, :])[0]
    assert np.abs(uncapped - truth).max() > 0.2  # the one gene drags the plain weighted fit
    assert np.abs(capped - truth).max() < 0.05
    # the cap survives a checkpoint round trip (and old states without it load as uncapped)
    state = capped_model.state()
    assert NNLSModel.from_state(state, signature.index, signature.columns, "cpm").max_bulk_ratio == 30.0
    del state["max_bulk_ratio"]
    assert NNLSModel.from_state(state, signature.index, signature.columns, "cpm").max_bulk_ratio is None
