"""Read-aware NNLS (model ``nnls_reads``): exact recovery, reads weight the fit, a test keeps types."""

import numpy as np
import pytest

from deconflow.errors import DeconflowError
from deconflow.evaluation import compute_metrics
from deconflow.io import MixtureSet
from deconflow.methylation import simulate_methylation
from deconflow.models import from_checkpoint
from deconflow.models.nnls import nnls_proportions
from deconflow.models.nnls_reads import ReadAwareNNLSModel, fit
from deconflow.read_evidence import read_fit

from test_methylation import make_atlas, settings


def test_noise_free_mixture_is_recovered_exactly_with_absent_types_exactly_zero():
    atlas = make_atlas(n_regions=200, seed=3)
    truth = np.zeros(atlas.shape[1])
    truth[[0, 2, 5]] = [0.6, 0.3, 0.1]
    x = atlas.to_numpy() @ truth
    coverage = np.random.default_rng(0).integers(1, 30, size=x.shape)
    predicted = ReadAwareNNLSModel(atlas).predict_with_coverage(x[None, :], coverage[None, :])[0]
    np.testing.assert_allclose(predicted, truth, atol=1e-9)
    assert np.all(predicted[truth == 0] == 0)


def test_regions_with_more_reads_count_more():
    """Two halves of the regions tell different mixtures; the half with the reads wins."""
    atlas = make_atlas(n_regions=200, seed=4)
    S = atlas.to_numpy()
    p_first = np.array([0.7, 0.3, 0, 0, 0, 0, 0, 0])
    p_second = np.array([0.3, 0.7, 0, 0, 0, 0, 0, 0])
    first = np.arange(200) < 100
    x = np.where(first, S @ p_first, S @ p_second)
    unweighted = nnls_proportions(S, x[None, :])[0]

    def fitted(coverage):
        coef = read_fit(S, x, coverage)["coef"]
        return coef / coef.sum()

    favour_first = fitted(np.where(first, 500, 1))
    favour_second = fitted(np.where(first, 1, 500))
    assert np.abs(favour_first - p_first).sum() < 0.5 * np.abs(unweighted - p_first).sum()
    assert np.abs(favour_second - p_second).sum() < 0.5 * np.abs(unweighted - p_second).sum()
    assert favour_first[0] > unweighted[0] > favour_second[0]


def test_uncovered_regions_drop_out():
    atlas = make_atlas(n_regions=150, seed=5)
    truth = np.array([0.5, 0, 0.25, 0, 0, 0.25, 0, 0])
    x = atlas.to_numpy() @ truth
    coverage = np.full(150, 5)
    coverage[:40] = 0
    garbage = x.copy()
    garbage[:40] = np.nan  # no reads: no fraction
    model = ReadAwareNNLSModel(atlas)
    np.testing.assert_allclose(model.predict_with_coverage(garbage[None], coverage[None])[0], truth, atol=1e-9)
    nothing = model.predict_reads(np.full((1, 150), np.nan), np.zeros((1, 150)), np.zeros((1, 8), dtype=bool), np.zeros((1, 8), dtype=bool))[0]
    assert np.isnan(nothing).all()  # no read at all: no type has evidence


def test_on_noisy_cfdna_mixtures_fewer_spurious_types_and_lower_error_than_nnls():
    atlas = make_atlas(n_regions=400, seed=6)
    sim = simulate_methylation(atlas, settings(n_mixtures=150, logit_sd=1.0, depth_range=(1.0, 10.0)), seed=11)
    plain = nnls_proportions(atlas.to_numpy(), sim["features"])
    reads = ReadAwareNNLSModel(atlas).predict_with_coverage(sim["features"], sim["coverage"])
    m_plain = compute_metrics(sim["proportions"], plain, atlas.columns)
    m_reads = compute_metrics(sim["proportions"], reads, atlas.columns)
    np.testing.assert_allclose(reads.sum(axis=1), 1.0, atol=1e-12)
    assert m_reads["spurious_rate"] < 0.5 * m_plain["spurious_rate"]
    assert m_reads["mae"] < m_plain["mae"]


def test_fit_checkpoint_round_trip_and_methylation_only():
    atlas = make_atlas(n_regions=120, seed=7)
    sim = simulate_methylation(atlas, settings(n_mixtures=20), seed=3)
    train = MixtureSet(sim["features"], sim["proportions"], atlas.index.to_numpy(), atlas.columns.to_numpy(),
                       np.arange(20).astype(str), {"normalization": "beta"})
    model = fit(train, None, atlas, {"methylation_evidence": {"false_call_rate": 0.01, "tissues": {"blood": ["granulocyte", "T-cell"]}}})
    assert model.settings["false_call_rate"] == 0.01 and model.tissues == {"blood": ["granulocyte", "T-cell"]}
    again = from_checkpoint(model.checkpoint())
    assert isinstance(again, ReadAwareNNLSModel) and again.tissues == model.tissues
    np.testing.assert_array_equal(again.predict_with_coverage(sim["features"], sim["coverage"]),
                                  model.predict_with_coverage(sim["features"], sim["coverage"]))
    rna = MixtureSet(sim["features"], sim["proportions"], atlas.index.to_numpy(), atlas.columns.to_numpy(),
                     np.arange(20).astype(str), {"normalization": "cpm"})
    with pytest.raises(DeconflowError, match="methylation"):
        fit(rna, None, atlas, {})
    with pytest.raises(DeconflowError, match="unknown methylation_evidence settings"):
        fit(train, None, atlas, {"methylation_evidence": {"wald": 3}})
