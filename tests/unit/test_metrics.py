"""compute_metrics and the evaluation tables on small cases worked out by hand."""

import math

import numpy as np
import pytest

from deconflow.evaluation import (
    COMPARISON_COLUMNS,
    comparison_table,
    compute_metrics,
    lins_ccc,
    long_table,
    pearson_r,
    wide_from_long,
)


def test_mae_and_rmse_by_hand():
    true = np.array([[0.5, 0.5], [1.0, 0.0]])
    pred = np.array([[0.7, 0.3], [0.9, 0.1]])
    # errors: +0.2, -0.2, -0.1, +0.1
    m = compute_metrics(true, pred, ["a", "b"])
    assert m["mae"] == pytest.approx((0.2 + 0.2 + 0.1 + 0.1) / 4)
    assert m["rmse"] == pytest.approx(math.sqrt((0.04 + 0.04 + 0.01 + 0.01) / 4))
    assert m["n_samples"] == 2 and m["n_cell_types"] == 2


def test_per_type_pearson_nan_for_constant_column_and_mean_over_finite():
    true = np.array([[0.2, 0.8, 0.0], [0.4, 0.6, 0.0], [0.6, 0.4, 0.0]])
    pred = np.array([[0.1, 0.9, 0.0], [0.5, 0.4, 0.1], [0.6, 0.5, 0.0]])
    # type a: x-mean = (-.2, 0, .2); y-mean = (-.3, .1, .2) -> Sxy .10, Sxx .08, Syy .14
    r_a = 0.10 / math.sqrt(0.08 * 0.14)
    # type b: x-mean = (.2, 0, -.2); y-mean = (.3, -.2, -.1) -> Sxy .08, Sxx .08, Syy .14
    r_b = 0.08 / math.sqrt(0.08 * 0.14)
    m = compute_metrics(true, pred, ["a", "b", "c"])
    r = m["per_cell_type_r"]
    assert set(r) == {"a", "b", "c"}
    assert r["a"] == pytest.approx(r_a)
    assert r["b"] == pytest.approx(r_b)
    assert math.isnan(r["c"])  # true column constant: r undefined
    assert m["mean_r"] == pytest.approx((r_a + r_b) / 2)


def test_pearson_nan_when_prediction_is_constant_and_mean_r_nan_when_none_finite():
    assert math.isnan(pearson_r([0.1, 0.2, 0.3], [0.5, 0.5, 0.5]))
    assert pearson_r([0.1, 0.2, 0.3], [0.3, 0.2, 0.1]) == pytest.approx(-1.0)
    m = compute_metrics(np.full((3, 2), 0.5), np.array([[0.4, 0.6], [0.5, 0.5], [0.6, 0.4]]), ["a", "b"])
    assert math.isnan(m["mean_r"])


def test_lins_ccc_by_formula():
    x = np.array([0.2, 0.8, 0.6, 0.4])  # mean .5, population variance .05
    # identical -> 1
    assert lins_ccc(x, x) == pytest.approx(1.0)
    # y = 0.5 x + 0.25: mean .5, var .0125, cov .025 -> 2*.025 / (.05 + .0125 + 0) = 0.8
    assert lins_ccc(x, 0.5 * x + 0.25) == pytest.approx(0.8)
    # y = x + 0.1: cov = var = .05, mean shift .1 -> 2*.05 / (.05 + .05 + .01) = 10/11
    assert lins_ccc(x, x + 0.1) == pytest.approx(10 / 11)


def test_ccc_in_metrics_is_1_when_identical_and_below_r_when_biased():
    true = np.array([[0.2, 0.8], [0.6, 0.4]])
    same = compute_metrics(true, true.copy(), ["a", "b"])
    assert same["ccc"] == pytest.approx(1.0)
    assert same["mae"] == 0.0
    biased = compute_metrics(true, true + 0.1, ["a", "b"])
    assert biased["mean_r"] == pytest.approx(1.0)  # perfectly correlated...
    assert biased["ccc"] == pytest.approx(10 / 11)  # ...but not concordant
    assert biased["ccc"] < biased["mean_r"]


def test_presence_spurious_and_ratio_by_hand():
    true = np.array(
        [
            [0.5, 0.009, 0.491],
            [0.0, 0.02, 0.98],
            [0.0, 0.5, 0.5],
        ]
    )
    pred = np.array(
        [
            [0.5, 0.011, 0.489],  # (0,1): absent, predicted 0.011 > 0.01 -> spurious
            [0.005, 0.01, 0.985],  # (1,0): absent, 0.005 -> correctly absent
            [0.01, 0.49, 0.5],  # (2,0): absent, exactly 0.01: "present" but not spurious (> is strict)
        ]
    )
    m = compute_metrics(true, pred, ["a", "b", "c"])
    # presence (>= 0.01) disagrees at (0,1) and (2,0): 7 of 9 agree
    assert m["presence_accuracy"] == pytest.approx(7 / 9)
    # absent entries: (0,1), (1,0), (2,0); spurious: only (0,1)
    assert m["spurious_count"] == 1
    assert m["spurious_rate"] == pytest.approx(1 / 3)
    # predicted total mass is 3.0 (three rows summing to 1)
    assert m["spurious_mass_share"] == pytest.approx(0.011 / 3.0)
    # ratio over the 6 entries with true >= 0.01
    ratios = [0.5 / 0.5, 0.489 / 0.491, 0.01 / 0.02, 0.985 / 0.98, 0.49 / 0.5, 0.5 / 0.5]
    assert m["mean_pred_true_ratio"] == pytest.approx(sum(ratios) / 6)
    assert m["presence_threshold"] == 0.01


def test_presence_threshold_is_a_parameter():
    true = np.array([[0.04, 0.96]])
    pred = np.array([[0.06, 0.94]])
    assert compute_metrics(true, pred, ["a", "b"])["spurious_count"] == 0  # 0.04 is present at 1 %
    at_5 = compute_metrics(true, pred, ["a", "b"], presence_threshold=0.05)
    assert at_5["spurious_count"] == 1
    assert at_5["spurious_rate"] == 1.0
    assert at_5["presence_accuracy"] == pytest.approx(0.5)


def test_no_absent_entries_gives_zero_spurious_rate():
    true = np.array([[0.5, 0.5]])
    m = compute_metrics(true, np.array([[0.3, 0.7]]), ["a", "b"])
    assert m["spurious_count"] == 0 and m["spurious_rate"] == 0.0 and m["spurious_mass_share"] == 0.0


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape mismatch"):
        compute_metrics(np.zeros((2, 3)), np.zeros((3, 2)), ["a", "b", "c"])


def test_long_table_and_wide_from_long_round_trip():
    rng = np.random.default_rng(2)
    true = rng.dirichlet(np.ones(3), size=4)
    pred = rng.dirichlet(np.ones(3), size=4)
    samples = ["s9", "s1", "s5", "s0"]  # not sorted: order must be first-seen, not alphabetical
    types = ["T", "B", "NK"]
    long = long_table(true, pred, samples, types)
    assert list(long.columns) == ["sample_id", "cell_type", "true_proportion", "predicted_proportion"]
    assert len(long) == 12
    row = long[(long.sample_id == "s5") & (long.cell_type == "NK")].iloc[0]
    assert row.true_proportion == true[2, 2] and row.predicted_proportion == pred[2, 2]
    true_back, pred_back, samples_back, types_back = wide_from_long(long)
    assert samples_back == samples and types_back == types
    np.testing.assert_array_equal(true_back, true)
    np.testing.assert_array_equal(pred_back, pred)


def test_comparison_table_one_row_per_model():
    true = np.array([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    metrics = {
        "nnls": compute_metrics(true, true, ["a", "b"]),
        "hpvade": compute_metrics(true, np.array([[0.3, 0.7], [0.5, 0.5], [0.5, 0.5]]), ["a", "b"]),
    }
    metrics["rectangle"] = compute_metrics(true, np.array([[0.4, 0.6], [0.5, 0.5], [0.5, 0.5]]), ["a", "b"])
    table = comparison_table(metrics, {"rectangle": "peer"})
    assert list(table.columns) == COMPARISON_COLUMNS
    assert COMPARISON_COLUMNS[:2] == ["model", "kind"]
    assert table["model"].tolist() == ["nnls", "hpvade", "rectangle"]
    assert table["kind"].tolist() == ["model", "model", "peer"]
    for name, m in metrics.items():
        row = table.set_index("model").loc[name]
        for column in COMPARISON_COLUMNS[2:]:  # interval columns: NaN for a model without intervals
            assert row[column] == pytest.approx(m.get(column, float("nan")), nan_ok=True)
    assert table.loc[0, "mae"] == 0.0 and table.loc[1, "mae"] > 0.0
