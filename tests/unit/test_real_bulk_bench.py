"""The real-bulk benchmark's diagnostics compute what they claim."""

import numpy as np

from deconflow.benchmarks.real_bulk import group_scores, loo_scale_calibration


def test_leave_one_out_scale_calibration_removes_a_shared_per_group_bias():
    rng = np.random.default_rng(0)
    measured = rng.dirichlet(np.ones(4) * 3, size=12)
    biased = measured * np.array([2.0, 0.5, 1.0, 1.5])
    biased /= biased.sum(axis=1, keepdims=True)
    calibrated = loo_scale_calibration(biased, measured, ridge=0.0)
    assert np.abs(biased - measured).mean() > 0.03
    np.testing.assert_allclose(calibrated, measured, atol=1e-3)
    # the sample being scored never enters its own fit: a sample off the shared bias stays off
    odd = biased.copy()
    odd[0] = measured[0]
    assert np.abs(loo_scale_calibration(odd, measured, ridge=0.0)[0] - measured[0]).mean() > 0.03


def test_group_scores_on_a_hand_computed_case():
    measured = np.array([[0.5, 0.5], [0.2, 0.8], [0.8, 0.2]])
    predicted = np.array([[0.6, 0.4], [0.2, 0.8], [0.7, 0.3]])
    scores = group_scores(predicted, measured, ["a", "b"])
    assert np.isclose(scores["mae"], (0.1 * 2 + 0 + 0.1 * 2) / 6)
    assert np.isclose(scores["r a"], np.corrcoef(measured[:, 0], predicted[:, 0])[0, 1])


def _signature(n_genes=60, n_types=3, seed=0):
    import pandas as pd

    rng = np.random.default_rng(seed)
    values = rng.gamma(0.5, 50.0, size=(n_genes, n_types)) + 0.1
    values = values / values.sum(axis=0) * 1e6
    return pd.DataFrame(values, index=[f"g{i}" for i in range(n_genes)], columns=[f"t{k}" for k in range(n_types)])


def test_simulated_platform_shift_is_one_factor_per_gene_for_every_mixture():
    from deconflow.benchmarks.linear_fit import shifted

    rng = np.random.default_rng(1)
    x = rng.gamma(1.0, 100.0, size=(5, 40))
    x = x / x.sum(axis=1, keepdims=True) * 1e6
    y = shifted(x, 1.0, draw=0)
    np.testing.assert_allclose(y.sum(axis=1), 1e6)
    log_ratio = np.log(y / x)
    # the same per-gene factor for every mixture, up to each mixture's renormalisation
    centred = log_ratio - log_ratio.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(centred, np.broadcast_to(centred[0], centred.shape), atol=1e-9)
    assert centred[0].std() > 0.5
    np.testing.assert_array_equal(shifted(x, 1.0, draw=0), y)
    assert not np.allclose(shifted(x, 1.0, draw=1), y)


def test_bulk_gene_factors_are_zero_on_a_noise_free_bulk_and_missing_where_the_bulk_lacks_genes():
    from deconflow.benchmarks.common import split_mixtures
    from deconflow.benchmarks.linear_fit import bulk_gene_factors, with_factors

    signature = _signature()
    proportions = np.random.default_rng(2).dirichlet(np.ones(3), size=8)
    bulk = proportions @ signature.to_numpy().T
    bulk[:, :4] = np.nan  # genes this bulk lacks
    val = split_mixtures(bulk, proportions, signature.index, signature.columns, "val", "cpm")
    factors = bulk_gene_factors(signature, val, bulk)
    assert np.isnan(factors[:4]).all()
    np.testing.assert_allclose(factors[4:], 0.0, atol=1e-6)
    # applying them leaves a noise-free mixture as it was (CPM over the genes it has)
    clean = np.nan_to_num(bulk[:, 4:])
    expected = clean / clean.sum(axis=1, keepdims=True) * 1e6
    np.testing.assert_allclose(with_factors(bulk, factors)[:, 4:], expected, rtol=1e-6)


def test_settings_validation_cannot_tell_apart_are_those_within_one_spread_of_the_best():
    import pandas as pd

    from deconflow.benchmarks.linear_fit import equivalent_rows

    frame = pd.DataFrame({"ccc": [0.70, 0.75, 0.74, 0.72], "spread": [0.01, 0.02, 0.10, 0.0]})
    assert equivalent_rows(frame, "ccc", "spread").tolist() == [False, True, True, False]


def test_mean_over_cohorts_weights_each_cohort_once_and_keeps_val_columns_once():
    import pandas as pd

    from deconflow.benchmarks.real_bulk import mean_over_cohorts

    daism = pd.DataFrame({"variant": ["nnls", "hpvade", "calibrated"], "ccc": [0.9, 0.8, 0.95],
                          "mean_group_r": [0.5, 0.6, 0.7], "mae": [0.05, 0.06, 0.02], "r monocytic.lineage": [0.1, 0.2, 0.3]})
    # another cohort, other group names, other order, one variant it was not scored on
    monaco = pd.DataFrame({"variant": ["hpvade", "nnls"], "ccc": [0.4, 0.5], "mean_group_r": [0.8, 0.7],
                           "mae": [0.1, 0.09], "r Monocytes": [0.5, 0.6]})
    val = pd.DataFrame({"variant": ["nnls", "hpvade", "val only"], "val_r": [0.9, 0.97, 0.5],
                        "val_ccc": [0.8, 0.95, 0.4], "val_mae": [0.03, 0.01, 0.1]})
    table = mean_over_cohorts({"daism": daism, "monaco": monaco}, val).set_index("variant")
    assert list(table.index) == ["nnls", "hpvade", "calibrated", "val only"]
    # no variant here reported its fallback share: no such column
    assert list(table.columns) == ["ccc", "mean_group_r", "mae", "val_r", "val_ccc", "val_mae"]
    np.testing.assert_allclose(table.loc["nnls", ["ccc", "mean_group_r", "mae"]], [0.7, 0.6, 0.07])
    np.testing.assert_allclose(table.loc["hpvade", ["ccc", "mean_group_r", "mae"]], [0.6, 0.7, 0.08])
    np.testing.assert_allclose(table.loc["hpvade", ["val_r", "val_ccc", "val_mae"]], [0.97, 0.95, 0.01])
    # not scored on every cohort: no mean (a mean of one cohort would read as a mean of both)
    assert table.loc["calibrated", ["ccc", "mean_group_r", "mae"]].isna().all()
    assert table.loc["val only", ["ccc", "mean_group_r", "mae"]].isna().all()
    assert np.isnan(table.loc["calibrated", "val_r"])


def test_linear_fit_real_columns_per_cohort_and_their_mean():
    from deconflow.benchmarks.linear_fit import real_columns

    real = {"daism": [{"variant": 0, "ccc": 0.9, "mean_group_r": 0.5, "mae": 0.04, "r B": 0.1},
                      {"variant": 1, "ccc": 0.7, "mean_group_r": 0.3, "mae": 0.08, "r B": 0.2}],
            "monaco": [{"variant": 0, "ccc": 0.5, "mean_group_r": 0.7, "mae": 0.10, "r B": 0.3},
                       {"variant": 1, "ccc": 0.6, "mean_group_r": 0.6, "mae": 0.06, "r B": 0.4}]}
    columns = real_columns(real, per_group=True)
    assert list(columns.columns) == ["real_daism_ccc", "real_daism_r", "real_daism_mae", "real_daism_r_B",
                                     "real_monaco_ccc", "real_monaco_r", "real_monaco_mae", "real_monaco_r_B",
                                     "real_mean_ccc", "real_mean_r", "real_mean_mae"]
    np.testing.assert_allclose(columns["real_mean_ccc"], [0.7, 0.65])
    np.testing.assert_allclose(columns["real_mean_mae"], [0.07, 0.07])
    np.testing.assert_allclose(columns["real_monaco_r"], [0.7, 0.6])


def test_the_config_setting_is_a_row_of_its_own_when_it_is_an_ensemble():
    from deconflow.benchmarks.linear_fit import settings_rows

    ensemble = {"marker_genes_per_type": [100, 200], "min_marker_cpm": [1.0, 5.0], "weight_offset_cpm": 10.0, "cell_fractions": True}
    rows = settings_rows(ensemble, [100, 200, None], [1.0, 5.0], [10.0])
    # the grid: single settings only, every gene once (no threshold), and the config's ensemble last
    assert [r["setting"]["marker_genes_per_type"] for r in rows] == [100, 100, 200, 200, None, [100, 200]]
    assert [r["default"] for r in rows] == [""] * 5 + ["*"]
    single = {**ensemble, "marker_genes_per_type": 200, "min_marker_cpm": 5}
    rows = settings_rows(single, [100, 200], [1.0, 5.0], [10.0])
    assert len(rows) == 4 and [r["default"] for r in rows] == ["", "", "", "*"]


def test_cohorts_default_to_every_bulk_with_truth_and_a_bulk_without_truth_is_refused(tmp_path):
    import pytest
    import yaml

    from deconflow.benchmarks.real_bulk import Cohort
    from deconflow.errors import DeconflowError

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"datasets": {"pbmc": {"bulk": {
        "plain": {"path": "a.tsv"},
        "monaco": {"path": "m.tsv", "truth": "mt.tsv", "truth_groups": {"T": ["T"]}},
        "daism": {"path": "d.tsv", "truth": "dt.tsv", "truth_groups": {"T": ["T"]}}}}}}, sort_keys=False))
    assert Cohort.names(config, "pbmc") == ["monaco", "daism"]
    assert Cohort.names(config, "pbmc", ["daism"]) == ["daism"]
    with pytest.raises(DeconflowError, match="no bulk 'plain' with `truth`.*monaco, daism"):
        Cohort.names(config, "pbmc", ["plain"])
    with pytest.raises(DeconflowError, match="no dataset 'cfdna'"):
        Cohort.names(config, "cfdna")


def _tiny_run(tmp_path):
    """A finished run in miniature (signature, val.h5, nnls and hpvade checkpoints) and a config
    with two cohorts of other group names, one with a `cell_mrna` table, and a bulk without truth."""
    import pandas as pd
    import yaml
    from learned_fixtures import TINY_HPVADE, synthetic

    from deconflow.io import read_signature, write_mixtures
    from deconflow.models import nnls, save_checkpoint
    from deconflow.training import train_learner

    train, val, signature, context = synthetic(n_genes=1100, n_train=128, n_val=32)
    results = tmp_path / "results"
    (results / "signature").mkdir(parents=True)
    (results / "pseudobulk").mkdir()
    signature.to_csv(results / "signature" / "signature.tsv", sep="\t")
    pd.Series([3000.0, 1500.0, 2000.0], index=pd.Index(signature.columns, name="cell_type"), name="library_size").to_csv(
        results / "signature" / "cell_library_size.tsv", sep="\t")
    write_mixtures(results / "pseudobulk" / "val.h5", val.features, val.proportions, val.feature_names, val.cell_types,
                   val.sample_ids, {"normalization": "cpm"})
    signature = read_signature(results / "signature" / "signature.tsv")
    linear_fit = {"marker_genes_per_type": [20, 40], "min_marker_cpm": [1.0, 5.0], "weight_offset_cpm": 10.0, "cell_fractions": True}
    for name in ("nnls", "hpvade"):
        (results / "models" / name).mkdir(parents=True)
    save_checkpoint(nnls.fit(train, val, signature, {"linear_fit": linear_fit}).checkpoint(
        {"reference_cell_size": {"A": 3000.0, "B": 1500.0, "C": 2000.0}}), results / "models" / "nnls" / "checkpoint_best.pt")
    model, _ = train_learner("hpvade", train, val, signature, {**TINY_HPVADE, "epochs": 1, "linear_fit": linear_fit}, 0, context=context)
    save_checkpoint(model.checkpoint({"reference_cell_size": {"A": 3000.0, "B": 1500.0, "C": 2000.0}}),
                    results / "models" / "hpvade" / "checkpoint_best.pt")

    rng = np.random.default_rng(5)
    bulks = {}
    groups = {"first": {"AB": ["A", "B"], "C": ["C"]}, "second": {"A": ["A"], "BC": ["B", "C"]}}
    for name, n in (("first", 6), ("second", 5)):
        truth = pd.DataFrame(rng.dirichlet(np.ones(3), size=n), index=pd.Index([f"{name}{i}" for i in range(n)], name="sample"),
                             columns=signature.columns)
        expression = truth.to_numpy() @ signature.to_numpy().T * rng.lognormal(0, 0.2, size=(n, len(signature)))
        pd.DataFrame(expression.T, index=pd.Index(signature.index, name="gene"), columns=truth.index).to_csv(tmp_path / f"{name}.tsv", sep="\t")
        pd.DataFrame({group: truth[types].sum(axis=1) for group, types in groups[name].items()}).to_csv(tmp_path / f"{name}_truth.tsv", sep="\t")
        bulks[name] = {"path": str(tmp_path / f"{name}.tsv"), "truth": str(tmp_path / f"{name}_truth.tsv"), "truth_groups": groups[name]}
    (tmp_path / "mrna.tsv").write_text("cell_type\tmrna_per_cell\nA\t1.0\ndefault\t0.5\n")
    bulks["first"]["cell_mrna"] = str(tmp_path / "mrna.tsv")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"linear_fit": linear_fit, "datasets": {"pbmc": {"bulk": {
        "plain": {"path": bulks["second"]["path"]}, **bulks}}}}, sort_keys=False))
    return config, results


def test_both_benchmarks_score_every_cohort_and_the_mean_on_a_tiny_run(tmp_path, capsys):
    from deconflow.benchmarks import linear_fit, real_bulk

    config, results = _tiny_run(tmp_path)
    common = ["--config", str(config), "--dataset", "pbmc", "--results", str(results), "--shift-sd", "0.5"]
    assert real_bulk.main(common + ["--adapt", "2:0.001:0"]) == 0
    out = capsys.readouterr().out
    first, rest = out.split("real bulk 'second'")
    second, mean = rest.split("mean over 2 cohorts (first, second")
    assert "real bulk 'first' (6 samples, 2 groups, cell_mrna applied)" in first
    assert "(5 samples, 2 groups, no cell_mrna)" in second
    header = [table.split("\n")[1].split() for table in (first, second, mean)]
    assert header[0] == ["variant", "ccc", "mean_group_r", "mae", "r", "AB", "r", "C"]
    assert header[1] == ["variant", "ccc", "mean_group_r", "mae", "r", "A", "r", "BC"]
    assert header[2] == ["variant", "ccc", "mean_group_r", "mae", "val_r", "val_ccc", "val_mae"]
    for table in (first, second, mean):
        assert "nnls (run)" in table and "hpvade encoder alone" in table and "leave-one-sample-out" in table
    assert "val half under shift sd 0.5: hpvade gated" in mean and "val half under shift" not in first + second

    # --no-cell-mrna: no reference sizes, so no cohort is converted (as the bulk without a table)
    assert real_bulk.Cohort.load(config, "pbmc", "first", None, ["A", "B", "C"]).content is None

    assert linear_fit.main(common + ["--markers", "20,all", "--offsets", "10", "--draws", "2"]) == 0
    out = capsys.readouterr().out
    for column in ("real_first_ccc", "real_second_mae", "real_mean_ccc", "real_mean_r", "first_shift_ccc", "second_shift_ccc"):
        assert column in out
    assert "20,40" in out and "1,5" in out  # the config's ensemble: its own row
    assert "real mean over 2 cohorts over them: CCC" in out
    assert "real 'first' over them:" in out and "real 'second' over them:" in out
