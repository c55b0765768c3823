"""The linear fit's sibling split (``linear_fit.siblings``, a dataset's ``sibling_types``): a pair
of fine types re-split on their own detected marker genes (deconflow.models.nnls)."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from deconflow.errors import DeconflowError
from deconflow.io import MixtureSet, read_signature, write_table
from deconflow.models import load_model, save_checkpoint
from deconflow.models.nnls import fit, sibling_split_design, split_siblings, split_siblings_in_cells
from deconflow.signature import cell_type_means_chunked

TYPES = ["conv", "treg", "mono", "b"]
PAIR = {"siblings": [["conv", "treg"]], "sibling_min_detection": 0.05, "sibling_min_log2_fold_change": 1.0}
ALL_GENES = {"marker_genes_per_type": None, "weight_offset_cpm": None, "cell_fractions": False, "max_bulk_ratio": None}


def _signature(seed=0, n_genes=400):
    """Mean CPM; conv and treg share most of their profile (siblings) and differ in 40 genes."""
    rng = np.random.default_rng(seed)
    raw = rng.gamma(0.6, 1.0, size=(n_genes, len(TYPES)))
    raw[:, 1] = raw[:, 0] * np.exp(0.1 * rng.standard_normal(n_genes))
    raw[:20, 1] *= 8.0  # treg-high genes
    raw[20:40, 0] *= 8.0  # conv-high genes
    signature = pd.DataFrame(raw / raw.sum(axis=0) * 1e6, index=[f"g{i}" for i in range(n_genes)], columns=TYPES)
    detection = pd.DataFrame(np.full(signature.shape, 0.5), index=signature.index, columns=TYPES)
    return signature, detection


def _empty(signature):
    return MixtureSet(np.zeros((0, len(signature))), np.zeros((0, signature.shape[1])), signature.index.to_numpy(),
                      np.array(TYPES), np.array([], dtype=str), {"normalization": "cpm"})


def test_design_keeps_detected_genes_that_separate_the_pair():
    signature, detection = _signature()
    detection.iloc[:10, 1] = 0.01  # half the treg-high genes are seen in 1 % of treg cells
    (group,) = sibling_split_design(signature, detection, PAIR)
    assert group["types"].tolist() == [0, 1]
    values = signature.to_numpy()
    as_high = values[:, :2].max(axis=1) >= values[:, 2:].max(axis=1)
    # detected, 8-fold apart and at least as high as in mono and b; not the rarely detected ones,
    # not the genes the pair shares (within ~10 %)
    assert group["rows"].tolist() == [g for g in range(10, 40) if as_high[g]]
    assert 10 <= len(group["rows"]) < 30


def test_noise_free_mixtures_are_recovered_exactly_with_the_split():
    signature, detection = _signature()
    signature.attrs["detection"] = detection
    truth = np.random.default_rng(1).dirichlet(np.ones(len(TYPES)), size=20)
    truth[0] = [0.0, 0.3, 0.3, 0.4]  # one sibling absent
    truth[1] = [0.5, 0.0, 0.5, 0.0]
    features = truth @ signature.to_numpy().T
    model = fit(_empty(signature), None, signature, {"linear_fit": {**ALL_GENES, **PAIR}})
    assert len(model.siblings) == 1
    np.testing.assert_allclose(model.predict(features), truth, atol=1e-7)


def test_split_ignores_the_whole_fits_sparse_genes():
    """A bulk whose rarely detected treg-high genes are inflated (a protocol effect, not cells): the
    whole fit moves conv mass to treg, the split on detected genes gives it back."""
    signature, detection = _signature()
    detection.iloc[:10, 1] = 0.01
    signature.attrs["detection"] = detection
    truth = np.array([[0.4, 0.05, 0.35, 0.2]])
    features = truth @ signature.to_numpy().T
    features[:, :10] *= 6.0
    whole = fit(_empty(signature), None, signature, {"linear_fit": ALL_GENES}).predict(features)
    split = fit(_empty(signature), None, signature, {"linear_fit": {**ALL_GENES, **PAIR}}).predict(features)
    assert whole[0, 1] > truth[0, 1] + 0.05  # the whole fit is pulled to treg
    assert abs(split[0, 1] - truth[0, 1]) < 0.02 and abs(split[0, 1] - truth[0, 1]) < abs(whole[0, 1] - truth[0, 1]) / 3
    np.testing.assert_allclose(split[0, :2].sum(), whole[0, :2].sum())  # the pair's mass is the whole fit's


def test_missing_genes_and_massless_pairs_keep_the_fits_split():
    signature, detection = _signature()
    (group,) = sibling_split_design(signature, detection, PAIR)
    mrna = np.array([[0.0, 0.0, 0.6, 0.4], [0.3, 0.2, 0.3, 0.2]])
    features = np.full((2, len(signature)), np.nan)
    features[0] = mrna[0] @ signature.to_numpy().T
    out = split_siblings(features, mrna, signature.to_numpy(), [group])
    np.testing.assert_array_equal(out, mrna)  # row 0: no mass to split; row 1: no observed gene


def test_bad_sibling_settings_are_refused_with_the_fix():
    signature, detection = _signature()
    for pairs, words in (([["conv", "nk"]], "not cell types"), ([["conv", "treg", "mono"]], "not a pair"),
                         ([["conv", "conv"]], "not a pair"), ([["conv", "treg"], ["treg", "mono"]], "two pairs")):
        with pytest.raises(DeconflowError, match=words) as err:
            sibling_split_design(signature, detection, {**PAIR, "siblings": pairs})
        assert "sibling_types" in str(err.value) or "one pair" in str(err.value)
    with pytest.raises(DeconflowError, match="build_signature"):
        sibling_split_design(signature, None, PAIR)
    assert sibling_split_design(signature, None, {**PAIR, "siblings": []}) == []


def test_detection_rates_are_shares_of_cells_with_a_count_in_any_chunking(tmp_path):
    rng = np.random.default_rng(3)
    counts = sp.random(60, 30, density=0.3, format="csr", random_state=4, data_rvs=lambda n: rng.integers(1, 9, n)).astype(np.float32)
    labels = np.array(["conv", "treg", "mono", "b", "other"] * 12)
    genes = [f"g{i}" for i in range(30)]
    chunks = [(np.arange(s, min(s + 7, 60)), counts[s : s + 7]) for s in range(0, 60, 7)]
    _, _, detection = cell_type_means_chunked(chunks, labels, genes, TYPES, detection=True)
    dense = counts.toarray() > 0
    expected = np.stack([dense[labels == t].mean(axis=0) for t in TYPES], axis=1)
    np.testing.assert_array_equal(detection.to_numpy(), expected)
    signature, _ = cell_type_means_chunked([(np.arange(60), counts)], labels, genes, TYPES)
    write_table(signature, tmp_path / "signature.tsv")
    write_table(detection, tmp_path / "detection.tsv")
    read = read_signature(tmp_path / "signature.tsv")
    np.testing.assert_allclose(read.attrs["detection"].to_numpy(), expected)


def test_checkpoint_keeps_the_split(tmp_path):
    signature, detection = _signature()
    signature.attrs["detection"] = detection
    model = fit(_empty(signature), None, signature, {"linear_fit": PAIR})
    save_checkpoint(model.checkpoint(), tmp_path / "nnls.pt")
    loaded = load_model(tmp_path / "nnls.pt")
    features = np.random.default_rng(5).dirichlet(np.ones(4), size=6) @ signature.to_numpy().T
    np.testing.assert_array_equal(loaded.predict(features), model.predict(features))
    assert [g["rows"].tolist() for g in loaded.siblings] == [g["rows"].tolist() for g in model.siblings]


def test_a_stacked_estimate_in_cell_fractions_gets_the_same_split():
    """HP-VADE's path: cell fractions with the pair's mass right but its split wrong are re-split
    exactly on a noise-free mixture, through the per-type library sizes."""
    signature, detection = _signature()
    (group,) = sibling_split_design(signature, detection, PAIR)
    sizes = np.array([1800.0, 1500.0, 3500.0, 2100.0])
    cells = np.random.default_rng(2).dirichlet(np.ones(4), size=8)
    mrna = cells * sizes / (cells * sizes).sum(axis=1, keepdims=True)
    features = mrna @ signature.to_numpy().T
    wrong_mrna = mrna.copy()
    wrong_mrna[:, 0], wrong_mrna[:, 1] = 0.2 * mrna[:, :2].sum(axis=1), 0.8 * mrna[:, :2].sum(axis=1)
    wrong = wrong_mrna / sizes / (wrong_mrna / sizes).sum(axis=1, keepdims=True)
    out = split_siblings_in_cells(features, wrong, signature.to_numpy(), sizes, [group])
    np.testing.assert_allclose(out, cells, atol=1e-7)
