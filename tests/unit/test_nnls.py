"""NNLS baseline: exact recovery of noise-free linear mixtures (CPM and beta), partial features,
and checkpoint round trips."""

import numpy as np
import pandas as pd
import pytest

from deconflow.models import load_model, save_checkpoint
from deconflow.models.nnls import NNLSModel

N_FEATURES, N_TYPES, N_SAMPLES = 200, 6, 8


def _signature(rng, scale: float) -> pd.DataFrame:
    values = rng.uniform(0.0, 1.0, size=(N_FEATURES, N_TYPES)) * scale
    return pd.DataFrame(
        values,
        index=[f"g{i}" for i in range(N_FEATURES)],
        columns=[f"type{k}" for k in range(N_TYPES)],
    )


def _proportions(rng) -> np.ndarray:
    """Random proportions with exact zeros in every sample (rows sum to 1)."""
    p = rng.dirichlet(np.ones(N_TYPES), size=N_SAMPLES)
    for i in range(N_SAMPLES):
        p[i, rng.choice(N_TYPES, size=1 + i % 3, replace=False)] = 0.0
    p /= p.sum(axis=1, keepdims=True)
    assert (p == 0).any(axis=1).all()
    return p


@pytest.fixture
def cpm_case():
    rng = np.random.default_rng(11)
    signature = _signature(rng, scale=5000.0)  # CPM-sized numbers
    proportions = _proportions(rng)
    mixtures = proportions @ signature.to_numpy().T  # samples x features
    return signature, proportions, mixtures


def test_noise_free_cpm_mixture_is_recovered_exactly(cpm_case):
    signature, proportions, mixtures = cpm_case
    predicted = NNLSModel(signature, normalization="cpm").predict(mixtures)
    np.testing.assert_allclose(predicted, proportions, atol=1e-6)
    # exact zeros stay (numerically) zero
    assert np.all(predicted[proportions == 0] < 1e-6)


def test_predicted_rows_sum_to_one_even_when_mixture_is_scaled(cpm_case):
    signature, proportions, mixtures = cpm_case
    # A mixture scaled by a per-sample constant (other library size) has the same proportions.
    scaled = mixtures * np.linspace(0.3, 7.0, N_SAMPLES)[:, None]
    predicted = NNLSModel(signature).predict(scaled)
    np.testing.assert_allclose(predicted.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(predicted, proportions, atol=1e-6)


def test_predict_partial_with_missing_features_still_recovers_exactly(cpm_case):
    signature, proportions, mixtures = cpm_case
    rng = np.random.default_rng(3)
    partial = mixtures.copy()
    for i in range(N_SAMPLES):  # a different 30 % of features missing in every sample
        partial[i, rng.choice(N_FEATURES, size=60, replace=False)] = np.nan
    predicted = NNLSModel(signature).predict_partial(partial)
    np.testing.assert_allclose(predicted, proportions, atol=1e-6)
    np.testing.assert_allclose(predicted.sum(axis=1), 1.0, atol=1e-12)


def test_checkpoint_round_trip_predicts_identically(cpm_case, tmp_path):
    signature, _, mixtures = cpm_case
    model = NNLSModel(signature, normalization="cpm")
    path = tmp_path / "models" / "checkpoint_best.pt"
    save_checkpoint(model.checkpoint(provenance={"seed": 11}), path)
    loaded = load_model(path)
    assert isinstance(loaded, NNLSModel)
    assert loaded.normalization == "cpm"
    np.testing.assert_array_equal(loaded.feature_names, signature.index.to_numpy())
    np.testing.assert_array_equal(loaded.cell_types, signature.columns.to_numpy())
    np.testing.assert_array_equal(loaded.predict(mixtures), model.predict(mixtures))


def test_beta_mixture_methylation_style_is_recovered_exactly():
    rng = np.random.default_rng(5)
    atlas = _signature(rng, scale=1.0)  # betas in [0, 1]
    proportions = _proportions(rng)
    betas = proportions @ atlas.to_numpy().T
    assert betas.min() >= 0 and betas.max() <= 1
    model = NNLSModel(atlas, normalization="beta")
    predicted = model.predict(betas)
    np.testing.assert_allclose(predicted, proportions, atol=1e-6)
    np.testing.assert_allclose(predicted.sum(axis=1), 1.0, atol=1e-12)
