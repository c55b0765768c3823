import numpy as np
import pytest
import scipy.sparse as sp

from deconflow.normalize import cpm, looks_log_scaled


def test_cpm_rows_sum_to_a_million_dense_and_sparse_agree():
    counts = np.array([[1, 3, 0, 6], [10, 0, 0, 0]], dtype=float)
    dense = cpm(counts)
    np.testing.assert_allclose(dense.sum(axis=1), 1e6)
    np.testing.assert_allclose(dense[0], [1e5, 3e5, 0, 6e5])
    np.testing.assert_allclose(cpm(sp.csr_matrix(counts)).toarray(), dense)


def test_cpm_of_summed_counts_is_linear_mixture_of_cpm():
    a = np.array([5.0, 5.0, 0.0])
    b = np.array([0.0, 10.0, 30.0])
    mixed = cpm((a + b)[None])[0]
    expected = (a.sum() * cpm(a[None])[0] + b.sum() * cpm(b[None])[0]) / (a.sum() + b.sum())
    np.testing.assert_allclose(mixed, expected)


def test_cpm_zero_library_raises():
    with pytest.raises(ValueError, match="zero total counts"):
        cpm(np.array([[0.0, 0.0], [1.0, 1.0]]))


@pytest.mark.parametrize(
    "values, expected",
    [(np.log1p(np.array([0, 10, 1e4, 5e5])), True), (np.array([0, 10, 1e4, 5e5]), False), (np.array([-1.0, 200.0]), True)],
)
def test_looks_log_scaled(values, expected):
    assert looks_log_scaled(values) is expected
