"""Methylation atlas I/O and the cfDNA-like mixture simulator (small synthetic atlases)."""

import zipfile

import numpy as np
import pandas as pd
import pytest

from deconflow.errors import DeconflowError
from deconflow.evaluation import detection_limit_table, spiked_entries
from deconflow.io import read_mixtures
from deconflow.methylation import (
    NANOMIX_ATLAS_MEMBER,
    MethylationSimSettings,
    atlas_from_counts,
    convert_nanomix_wheel,
    read_atlas,
    simulate_methylation,
    split_seed,
    split_simulation_settings,
    write_methylation_mixtures,
)
from deconflow.models.nnls import NNLSModel, nnls_proportions

BLOOD = ["granulocyte", "monocyte", "T-cell"]
SOLID = ["hepatocyte", "neuron", "kidney", "lung", "colon"]


def make_atlas(n_regions=300, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    types = BLOOD + SOLID
    betas = rng.beta(0.5, 0.5, size=(n_regions, len(types))).round(3)
    index = pd.Index([f"chr1:{1000 * i}-{1000 * i + 200}" for i in range(n_regions)], name="region")
    return pd.DataFrame(betas, index=index, columns=types)


def settings(**kw) -> MethylationSimSettings:
    base = dict(n_mixtures=200, blood_cell_types=tuple(BLOOD), min_blood_present=1, max_blood_present=3, max_present=4)
    base.update(kw)
    return MethylationSimSettings(**base)


def test_proportions_exact_sparse_and_sum_to_one():
    atlas = make_atlas()
    sim = simulate_methylation(atlas, settings(spike_fraction=0.2), seed=1)
    props = sim["proportions"]
    np.testing.assert_allclose(props.sum(axis=1), 1.0, atol=1e-12)
    assert (props >= 0).all()
    n_present = (props > 0).sum(axis=1)
    assert n_present.max() <= 3 + 3  # blood + solid at most
    assert (props == 0).mean() > 0.4  # sparse by construction: absent tissues are exactly 0
    # spike-ins: one solid tissue at exactly its level, the rest blood
    spikes = sim["spike_level"] > 0
    assert spikes.sum() == 40
    rows = np.flatnonzero(spikes)
    assert np.array_equal(props[rows, sim["spike_type"][rows]], sim["spike_level"][rows])
    solid_idx = [atlas.columns.get_loc(c) for c in SOLID]
    assert ((props[rows][:, solid_idx] > 0).sum(axis=1) == 1).all()


def test_cfdna_prior_keeps_blood_dominant():
    atlas = make_atlas()
    sim = simulate_methylation(atlas, settings(cfdna_prior_fraction=1.0, n_mixtures=300), seed=2)
    blood_share = sim["proportions"][:, : len(BLOOD)].sum(axis=1)
    assert (blood_share >= 0.5 - 1e-12).all()
    solid = sim["proportions"][:, len(BLOOD) :]
    assert solid[solid > 0].min() >= 0.001 * 0.5 - 1e-12  # log-uniform from 0.1 %, at most halved by the cap


def test_seeded_determinism_and_independent_splits():
    atlas = make_atlas()
    a = simulate_methylation(atlas, settings(), seed=5)
    b = simulate_methylation(atlas, settings(), seed=5)
    c = simulate_methylation(atlas, settings(), seed=6)
    np.testing.assert_array_equal(a["features"], b["features"])
    np.testing.assert_array_equal(a["proportions"], b["proportions"])
    assert not np.array_equal(a["proportions"], c["proportions"])
    assert len({split_seed(0, s) for s in ("train", "val", "test")}) == 3
    assert split_simulation_settings(settings(), "train").spike_fraction == 0
    assert split_simulation_settings(settings(), "test", spike_fraction_test=0.3).spike_fraction == 0.3


def test_zero_coverage_is_nan_or_atlas_mean():
    atlas = make_atlas()
    low = settings(depth_range=(0.5, 1.0))  # many regions without reads
    sim = simulate_methylation(atlas, low, seed=3)
    zero = sim["coverage"] == 0
    assert zero.mean() > 0.2
    assert np.isnan(sim["features"][zero]).all()
    assert not np.isnan(sim["features"][~zero]).any()
    assert ((sim["features"][~zero] >= 0) & (sim["features"][~zero] <= 1)).all()
    filled = simulate_methylation(atlas, settings(depth_range=(0.5, 1.0), zero_coverage="atlas_mean"), seed=3)
    expected = np.broadcast_to(atlas.to_numpy().mean(axis=1), zero.shape)[zero]
    np.testing.assert_allclose(filled["features"][zero], expected)
    # NNLS drops uncovered regions per sample and still returns proportions
    pred = NNLSModel(atlas, normalization="beta").predict(sim["features"])
    np.testing.assert_allclose(pred.sum(axis=1), 1.0)


def test_observed_fractions_follow_binomial_reads():
    atlas = make_atlas()
    sim = simulate_methylation(atlas, settings(depth_range=(30, 30), coverage_model="uniform", logit_sd=0.0), seed=4)
    assert (sim["coverage"] == 30).all()
    # no biological noise: the true betas are exactly the proportion-weighted atlas
    clipped = np.clip(atlas.to_numpy(), 1e-3, 1 - 1e-3)
    np.testing.assert_allclose(sim["true_betas"], sim["proportions"] @ clipped.T, atol=1e-12)
    resid = sim["features"] - sim["true_betas"]
    assert abs(resid.mean()) < 0.01
    assert resid.std() < 0.1


def test_nnls_exact_on_noise_free_betas():
    atlas = make_atlas()
    sim = simulate_methylation(atlas, settings(n_mixtures=30, logit_sd=0.0, beta_clip=1e-9), seed=8)
    exact = sim["proportions"] @ atlas.to_numpy().T
    pred = NNLSModel(atlas, normalization="beta").predict(exact)
    np.testing.assert_allclose(pred, sim["proportions"], atol=1e-6)
    # restricted to the true support it is exact as well, and other types are exactly 0
    pred = nnls_proportions(atlas.to_numpy(), exact, columns=sim["proportions"] > 0)
    np.testing.assert_allclose(pred, sim["proportions"], atol=1e-6)
    assert (pred[sim["proportions"] == 0] == 0).all()


def test_written_mixtures_have_the_pseudobulk_layout(tmp_path):
    atlas = make_atlas()
    atlas_path = tmp_path / "atlas.tsv"
    atlas.to_csv(atlas_path, sep="\t")
    s = split_simulation_settings(settings(n_mixtures=40), "test")
    sim = simulate_methylation(atlas, s, seed=1)
    out = tmp_path / "test.h5"
    write_methylation_mixtures(out, atlas, sim, s, seed=1, split="test", source=atlas_path)
    mix = read_mixtures(out, expect_normalization="beta")
    assert mix.features.shape == (40, len(atlas))
    assert list(mix.cell_types) == list(atlas.columns)
    assert mix.attrs["source_checksum"].startswith("sha256:")
    assert mix.attrs["generator_settings"]["logit_sd"] == 0.5
    assert "coverage" in mix.extra and mix.extra["coverage"].shape == (40, len(atlas))
    with pytest.raises(DeconflowError, match="normalization is 'beta'"):
        read_mixtures(out, expect_normalization="cpm")


def test_detection_limit_table_uses_exact_spike_entries():
    true = np.array([[0.001, 0.999, 0.0], [0.05, 0.95, 0.0], [0.0011, 0.9989, 0.0]])
    pred = np.array([[0.0, 1.0, 0.0], [0.04, 0.95, 0.01], [0.002, 0.998, 0.0]])
    assert spiked_entries(true).sum() == 2  # 0.0011 is not a spike level
    table = detection_limit_table(true, pred).set_index("spike_level")
    assert table.loc[0.001, "n_entries"] == 1 and table.loc[0.001, "fraction_detected"] == 0.0
    assert table.loc[0.05, "fraction_detected"] == 1.0
    assert table.loc[0.05, "mean_estimated"] == pytest.approx(0.04)
    assert np.isnan(table.loc[0.005, "fraction_detected"])
    assert table["absent_called_rate"].iloc[0] == pytest.approx(1 / 3)


def test_read_atlas_validates(tmp_path):
    atlas = make_atlas(20)
    good = tmp_path / "good.tsv"
    atlas.to_csv(good, sep="\t")
    assert read_atlas(good).shape == atlas.shape
    bad = atlas.copy()
    bad.iloc[0, 0] = 1.5
    bad.to_csv(tmp_path / "range.tsv", sep="\t")
    with pytest.raises(DeconflowError, match="outside"):
        read_atlas(tmp_path / "range.tsv")
    bad = atlas.copy()
    bad.iloc[2, 1] = np.nan
    bad.to_csv(tmp_path / "nan.tsv", sep="\t")
    with pytest.raises(DeconflowError, match="NaN"):
        read_atlas(tmp_path / "nan.tsv")
    dup = pd.concat([atlas, atlas.iloc[:1]])
    dup.to_csv(tmp_path / "dup.tsv", sep="\t")
    with pytest.raises(DeconflowError, match="duplicate region"):
        read_atlas(tmp_path / "dup.tsv")
    with pytest.raises(DeconflowError, match="does not exist"):
        read_atlas(tmp_path / "missing.tsv")


def test_atlas_from_counts_and_wheel_conversion(tmp_path):
    total = pd.DataFrame([[10, 20], [0, 5], [4, 4]], index=["r1", "r2", "r3"], columns=["a", "b"])
    methylated = pd.DataFrame([[5, 20], [0, 1], [1, 3]], index=total.index, columns=total.columns)
    methylated.to_csv(tmp_path / "m.tsv", sep="\t")
    total.to_csv(tmp_path / "t.tsv", sep="\t")
    atlas, summary = atlas_from_counts(tmp_path / "m.tsv", tmp_path / "t.tsv")
    assert list(atlas.index) == ["r1", "r3"] and summary["n_regions_dropped_low_coverage"] == 1
    np.testing.assert_allclose(atlas.loc["r3"].to_numpy(), [0.25, 0.75])
    # a fake wheel with the nanomix layout (chr, start, end, types...)
    text = "chr\tstart\tend\tT-cell\thepatocyte\nchr1\t100\t300\t0.9\t0.1\nchr2\t5\t50\t0.2\t0.8\n"
    wheel = tmp_path / "nanomix-0.2.0-cp39-cp39-manylinux_2_31_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(NANOMIX_ATLAS_MEMBER, text)
    out = tmp_path / "atlas.tsv"
    summary = convert_nanomix_wheel(wheel, out)
    assert summary["n_regions"] == 2
    converted = read_atlas(out)
    assert list(converted.index) == ["chr1:100-300", "chr2:5-50"]
    with zipfile.ZipFile(tmp_path / "empty.whl", "w") as zf:
        zf.writestr("other.txt", "x")
    with pytest.raises(DeconflowError, match="missing from the wheel"):
        convert_nanomix_wheel(tmp_path / "empty.whl", tmp_path / "x.tsv")


def test_panel_coverage_leaves_whole_regions_without_reads_and_default_draws_unchanged():
    from dataclasses import replace

    atlas = make_atlas(n_regions=400)
    base = settings(n_mixtures=60)
    plain = simulate_methylation(atlas, base, seed=3)
    again = simulate_methylation(atlas, replace(base, panel_fraction=0.0), seed=3)
    np.testing.assert_array_equal(plain["coverage"], again["coverage"])  # the option off: the same draws
    panel = simulate_methylation(atlas, replace(base, panel_fraction=0.5, panel_share_range=(0.05, 0.1)), seed=3)
    covered = (panel["coverage"] > 0).mean(axis=1)
    is_panel = covered <= 0.12
    assert 15 <= is_panel.sum() <= 45  # about half
    assert np.all(covered[is_panel] >= 0.02)
    depth = panel["coverage"][is_panel].sum(axis=1) / (panel["coverage"][is_panel] > 0).sum(axis=1)
    assert np.all((depth >= 5) & (depth <= 1100))
    assert np.all(np.isnan(panel["features"][panel["coverage"] == 0]))
    np.testing.assert_array_equal(panel["proportions"], plain["proportions"])
    again = simulate_methylation(atlas, replace(base, panel_fraction=0.5, panel_share_range=(0.05, 0.1)), seed=3)
    np.testing.assert_array_equal(panel["features"], again["features"])
