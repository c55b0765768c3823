"""The oracle bound of the real-reads methylation benchmark (issue 32): a closed form, checked on
a two-region pair by hand; no data needed."""

import numpy as np
import pytest
from scipy.stats import norm

from deconflow.benchmarks.real_methylation import oracle_power

# A fully methylated where B is unmethylated and the reverse; 9 calls per region in both
A_METH, A_TOTAL = np.array([9.0, 0.0]), np.array([9.0, 9.0])
B_METH, B_TOTAL = np.array([0.0, 9.0]), np.array([9.0, 9.0])


def test_noncentrality_and_power_match_the_hand_computed_values():
    # μ_A = (0.95, 0.05), μ_0 = (0.05, 0.95); n_r = 9; μ_1 − μ_0 = f·(±0.9); μ_0(1 − μ_0) = 0.0475
    lam, power = oracle_power(A_METH, A_TOTAL, B_METH, B_TOTAL, 0.1, false_call_rate=0.01)
    assert lam == pytest.approx(2 * 9 * 0.09 ** 2 / 0.0475)
    assert power == pytest.approx(norm.cdf(np.sqrt(2 * 9 * 0.09 ** 2 / 0.0475) - norm.ppf(0.99)))
    half, _ = oracle_power(A_METH, A_TOTAL, B_METH, B_TOTAL, 0.1, false_call_rate=0.01, regions=np.array([True, False]))
    assert half == pytest.approx(lam / 2)


def test_power_is_the_false_call_rate_without_a_and_rises_with_the_fraction():
    lam0, power0 = oracle_power(A_METH, A_TOTAL, B_METH, B_TOTAL, 0.0, false_call_rate=0.001)
    assert lam0 == 0 and power0 == pytest.approx(0.001)
    powers = [oracle_power(A_METH * 10, A_TOTAL * 10, B_METH * 10, B_TOTAL * 10, f)[1] for f in (0.005, 0.01, 0.02, 0.05, 0.5)]
    assert np.all(np.diff(powers[:4]) > 0) and powers[0] < 0.05 and powers[-1] > 0.99


def test_regions_covered_in_one_sample_only_do_not_count_and_bad_fractions_are_refused():
    lam, _ = oracle_power(np.array([9.0, 9.0]), np.array([9.0, 9.0]), np.array([0.0, 0.0]), np.array([9.0, 0.0]), 0.2)
    lam_one, _ = oracle_power(np.array([9.0]), np.array([9.0]), np.array([0.0]), np.array([9.0]), 0.2)
    assert lam == pytest.approx(lam_one) and lam > 0
    with pytest.raises(ValueError, match="fraction"):
        oracle_power(A_METH, A_TOTAL, B_METH, B_TOTAL, 1.5)
