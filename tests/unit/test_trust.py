"""Per-sample trust (deconflow.trust): conformal quantile and coverage by hand, intervals that
hold on noise-free and on exchangeable noisy mixtures, and the quality row's flags."""

import json

import numpy as np
import pandas as pd
import pytest

from deconflow.deconvolve import deconvolve_file
from deconflow.errors import DeconflowError
from deconflow.models import save_checkpoint
from deconflow.models.nnls import NNLSModel
from deconflow.trust import (calibrate, conformal_quantile, gene_masks, interval_coverage, intervals, parse_plausible,
                             read_calibration)

TYPES = ["T", "B", "NK", "Mono"]


def test_conformal_quantile_and_coverage_by_hand():
    scores = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0]  # n = 9
    assert conformal_quantile(scores, 0.9) == 9.0  # ceil(10 * 0.9) = 9th smallest
    assert conformal_quantile(scores, 0.8) == 8.0  # ceil(8.0) = 8th
    assert conformal_quantile(scores, 0.75) == 8.0  # ceil(7.5) = 8th
    assert conformal_quantile(scores, 0.95) == float("inf")  # ceil(9.5) = 10 > n: nothing finite is valid
    truth = np.array([[0.1, 0.5], [0.3, 0.2]])
    lower = np.array([[0.0, 0.5], [0.31, 0.1]])
    upper = np.array([[0.2, 0.6], [0.4, 0.3]])
    coverage, width = interval_coverage(truth, lower, upper)  # the boundary 0.5 counts, 0.3 < 0.31 does not
    assert coverage == pytest.approx(0.75)
    assert width == pytest.approx((0.2 + 0.1 + 0.09 + 0.2) / 4)


def test_gene_masks_are_seeded_and_hide_the_fraction():
    masks = gene_masks(200, 5, 0.25, seed=3)
    assert masks.shape == (5, 200) and ((~masks).sum(axis=1) == 50).all()
    assert np.array_equal(masks, gene_masks(200, 5, 0.25, seed=3))
    assert not np.array_equal(masks, gene_masks(200, 5, 0.25, seed=4))


def _signature(rng, n_genes=300):
    raw = rng.gamma(0.5, 1.0, size=(n_genes, len(TYPES)))
    return pd.DataFrame(raw / raw.sum(axis=0) * 1e6, index=[f"g{i}" for i in range(n_genes)], columns=TYPES)


def _mixtures(rng, signature, n, noise_sd):
    """CPM mixtures with per-gene, per-sample log-normal noise (sd on the log scale)."""
    truth = rng.dirichlet(np.ones(len(TYPES)), size=n)
    clean = truth @ signature.to_numpy().T
    noisy = clean * np.exp(noise_sd * rng.standard_normal(clean.shape))
    return noisy / noisy.sum(axis=1, keepdims=True) * 1e6, truth


@pytest.fixture(scope="module")
def calibrated():
    rng = np.random.default_rng(0)
    signature = _signature(rng)
    model = NNLSModel(signature, normalization="cpm")
    features, truth = _mixtures(rng, signature, 400, noise_sd=0.5)
    return rng, signature, model, calibrate(model, features, truth, {"replicates": 10}, seed=1)


def test_noise_free_mixture_intervals_contain_the_truth(calibrated):
    rng, signature, model, calibration = calibrated
    truth = rng.dirichlet(np.ones(len(TYPES)), size=25)
    truth[0, 1:] = 0.0
    truth[0, 0] = 1.0
    features = truth @ signature.to_numpy().T
    estimate, lower, upper = intervals(model, features, calibration, 0.9)
    np.testing.assert_allclose(estimate, truth, atol=1e-6)
    assert ((lower <= truth + 1e-9) & (truth - 1e-9 <= upper)).all()
    assert (upper - lower).max() > 0  # real intervals, not points that contain p̂ by construction only


def test_coverage_on_exchangeable_held_out_mixtures_is_near_nominal(calibrated):
    """Split conformal: mixtures drawn like the calibration ones are covered at about the level."""
    rng, signature, model, calibration = calibrated
    features, truth = _mixtures(rng, signature, 400, noise_sd=0.5)
    for level in (0.8, 0.9):
        _, lower, upper = intervals(model, features, calibration, level)
        coverage, _ = interval_coverage(truth, lower, upper)
        assert level - 0.05 <= coverage <= level + 0.05, (level, coverage)
    # a wider level gives wider intervals
    widths = [interval_coverage(truth, *intervals(model, features, calibration, lv)[1:])[1] for lv in (0.5, 0.9)]
    assert widths[0] < widths[1]


def _write_model_and_bulk(tmp_path, calibration, signature, bulk):
    model_path = tmp_path / "model" / "checkpoint_best.pt"
    model_path.parent.mkdir()
    save_checkpoint(NNLSModel(signature, normalization="cpm").checkpoint(), model_path)
    (model_path.parent / "calibration.json").write_text(json.dumps(calibration))
    bulk_path = tmp_path / "bulk.tsv"
    bulk.to_csv(bulk_path, sep="\t")
    return model_path, bulk_path


def test_bulk_missing_most_model_genes_is_flagged_low_overlap(calibrated, tmp_path):
    rng, signature, model, calibration = calibrated
    features, _ = _mixtures(rng, signature, 3, noise_sd=0.1)
    bulk = pd.DataFrame(features.T, index=signature.index, columns=["s1", "s2", "s3"])
    model_path, full_path = _write_model_and_bulk(tmp_path, calibration, signature, bulk)
    partial_path = tmp_path / "partial.tsv"
    bulk.iloc[:60].to_csv(partial_path, sep="\t")  # 60 of 300 genes
    deconvolve_file(model_path, full_path, tmp_path / "full" / "proportions.csv", min_overlap=50, qc=True, intervals=0.9)
    deconvolve_file(model_path, partial_path, tmp_path / "partial" / "proportions.csv", min_overlap=50, qc=True, intervals=0.9)
    full = pd.read_csv(tmp_path / "full" / "qc.csv", keep_default_na=False)
    partial = pd.read_csv(tmp_path / "partial" / "qc.csv", keep_default_na=False)
    assert list(partial.columns) == ["sample_id", "feature_overlap", "relative_residual", "residual_percentile", "fallback",
                                     "adaptation", "cell_mrna", "flag", "reads", "nonzero_features", "profile_distance"]
    assert (partial["adaptation"] == "none").all()  # nnls has no adaptation step
    assert partial["feature_overlap"].tolist() == pytest.approx([0.2] * 3) and partial["flag"].str.contains("low_overlap").all()
    assert (full["feature_overlap"] == 1.0).all() and not full["flag"].str.contains("low_overlap").any()
    assert (full["relative_residual"] > 0).all() and full["residual_percentile"].between(0, 100).all()
    table = pd.read_csv(tmp_path / "partial" / "intervals.csv")
    assert list(table.columns) == ["sample_id", "cell_type", "estimate", "lower", "upper"] and len(table) == 3 * len(TYPES)
    assert ((table["lower"] <= table["estimate"]) & (table["estimate"] <= table["upper"])).all()


def test_residual_beyond_validation_and_implausible_fractions_are_flagged(calibrated, tmp_path):
    rng, signature, model, calibration = calibrated
    features, _ = _mixtures(rng, signature, 2, noise_sd=0.1)
    shuffled = rng.permuted(features[:1], axis=1)  # a sample unlike any mixture of the signature
    bulk = pd.DataFrame(np.vstack([features, shuffled]).T, index=signature.index, columns=["a", "b", "odd"])
    model_path, bulk_path = _write_model_and_bulk(tmp_path, calibration, signature, bulk)
    table = deconvolve_file(model_path, bulk_path, tmp_path / "out" / "proportions.csv", min_overlap=50, qc=True,
                            plausible_fractions={"T": [0.0, 0.0001]})
    qc = pd.read_csv(tmp_path / "out" / "qc.csv", keep_default_na=False).set_index("sample_id")
    assert "residual_beyond_validation" in qc.loc["odd", "flag"] and qc.loc["odd", "residual_percentile"] == 100
    assert "residual_beyond_validation" not in qc.loc["a", "flag"]
    implausible = qc["flag"].str.contains("implausible_T")
    assert (implausible == (table["T"] > 0.0001)).all() and implausible.any()


def test_bad_plausible_ranges_and_foreign_calibration_are_refused(calibrated, tmp_path):
    _, signature, model, calibration = calibrated
    with pytest.raises(DeconflowError, match="not a cell type"):
        parse_plausible({"Treg": [0, 0.1]}, TYPES)
    with pytest.raises(DeconflowError, match="low ≤ high"):
        parse_plausible({"T": [0.5, 0.1]}, TYPES)
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({**calibration, "cell_types": ["X", "Y"]}))
    with pytest.raises(DeconflowError, match="another model"):
        read_calibration(path, model)


def test_flagged_samples_are_marked_and_intervals_drawn(tmp_path):
    from deconflow.plots import flagged_samples, miami_plot, scatter_plot

    qc = pd.DataFrame({"sample_id": ["s1", "s2"], "flag": ["", "low_overlap;implausible_T"]})
    assert flagged_samples(qc) == {"s2": "low_overlap;implausible_T"}
    summary = pd.DataFrame({"sample_id": ["s1", "s1", "s2", "s2"], "cell_type": ["T", "B"] * 2,
                            "true_proportion": [0.6, 0.4, 0.2, 0.8], "predicted_proportion": [0.5, 0.5, 0.3, 0.7],
                            "lower": [0.4, 0.4, 0.2, 0.6], "upper": [0.6, 0.6, 0.4, 0.8]})
    miami_plot(summary, tmp_path / "miami.png", flagged=flagged_samples(qc))
    scatter_plot(summary, tmp_path / "scatter.png")
    assert (tmp_path / "miami.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "scatter.png").stat().st_size > 0


def test_reduced_nnls_gives_the_nnls_solution():
    """The normal-equation NNLS used for the replicates solves the same problem as nnls_proportions,
    including samples whose unconstrained solution is negative for some types."""
    from deconflow.models.nnls import nnls_proportions, reduced_nnls

    rng = np.random.default_rng(5)
    design = rng.gamma(0.5, 1.0, size=(120, 6))
    truth = rng.dirichlet(np.full(6, 0.3), size=40)
    features = truth @ design.T + rng.normal(0, 0.05, size=(40, 120))
    expected = nnls_proportions(design, features)
    assert (expected == 0).any()  # the bound is active somewhere
    np.testing.assert_allclose(reduced_nnls(design, features), expected, atol=1e-8)
    np.testing.assert_allclose(reduced_nnls(design, np.zeros((2, 120))), 1 / 6)  # nothing fitted: uniform, as nnls_proportions
