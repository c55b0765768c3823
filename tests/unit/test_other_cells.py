"""Cells of no reference type (deconflow.other_cells): exact on noise-free mixtures whose other
cells express no marker gene, absolute fractions summing to 1, the flag from the calibrated
lower bound, calibration on held-out-type mixtures, and the CLI's --absolute / qc columns."""

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from deconflow import cli
from deconflow.deconvolve import deconvolve_file
from deconflow.errors import DeconflowError
from deconflow.models import save_checkpoint
from deconflow.models.nnls import NNLSModel
from deconflow.other_cells import (OTHER_COLUMN, OtherCellsFit, absolute_fractions, calibrate, held_out_signature, housekeeping_rows,
                                   other_cells_table, read_other_cells, specific_marker_rows, to_other_cells,
                                   write_calibration)
from deconflow.pseudobulk import MixtureSettings
from deconflow.trust import calibrate as calibrate_intervals

TYPES = ["T", "B", "Mono"]
SIZES = np.array([1000.0, 2000.0, 4000.0])  # mRNA per cell (UMIs); the median, 2000, is the other cells'


def _profiles(rng, n_markers=20, n_shared=40, n_own=30):
    """Signature (genes x TYPES, CPM) with exclusive markers per type and shared genes, and an
    other-cells profile that is zero on every marker gene (CPM over the same genes)."""
    n_genes = n_markers * len(TYPES) + n_shared + n_own
    values = np.zeros((n_genes, len(TYPES)))
    for k in range(len(TYPES)):
        values[k * n_markers:(k + 1) * n_markers, k] = rng.uniform(50, 500, n_markers)
    shared = slice(n_markers * len(TYPES), n_markers * len(TYPES) + n_shared)
    values[shared] = rng.uniform(20, 300, (n_shared, len(TYPES)))
    other = np.zeros(n_genes)
    other[shared] = rng.uniform(20, 300, n_shared)
    other[-n_own:] = rng.uniform(100, 1000, n_own)
    # the last 10 shared genes hold exactly 5 % of every profile (the other cells' too): a bulk
    # lacking them lacks the same share of every population's mRNA
    block = slice(shared.stop - 10, shared.stop)
    columns = np.column_stack([values, other])
    rest = np.ones(n_genes, dtype=bool)
    rest[block] = False
    weights = rng.uniform(1, 2, 10)
    columns[block] = weights[:, None] / weights.sum() * 0.05e6
    columns[rest] = columns[rest] / columns[rest].sum(axis=0) * 0.95e6
    genes = [f"g{i}" for i in range(n_genes)]
    return pd.DataFrame(columns[:, :-1], index=genes, columns=TYPES), columns[:, -1]


def _mixture(signature, other_profile, cells, other_cells, unknown_size=2000.0):
    """Noise-free CPM of known cell fractions ``cells`` (rows over TYPES, summing to 1 - other)."""
    mrna_known = cells * SIZES[None, :]
    mrna_other = other_cells * unknown_size
    total = mrna_known.sum(axis=1) + mrna_other
    return (mrna_known / total[:, None]) @ signature.to_numpy().T + (mrna_other / total)[:, None] * other_profile[None, :]


HOUSEKEEPING = np.arange(90, 100)  # the block every profile holds exactly 5 % of its CPM on


def _fit(signature, envelope_weight=3.0, housekeeping=False):
    fit = OtherCellsFit.from_signature(signature, SIZES, {"marker_genes_per_type": 20, "min_log2_fold_change": 3.0,
                                                          "min_marker_cpm": 1.0, "envelope_weight": envelope_weight})
    if housekeeping:
        fit.housekeeping = HOUSEKEEPING
    return fit


@pytest.mark.parametrize("envelope_weight, housekeeping", [(1.0, False), (3.0, False), (3.0, True)])
def test_noise_free_other_cells_are_exact_when_they_express_no_marker(envelope_weight, housekeeping):
    rng = np.random.default_rng(0)
    signature, other_profile = _profiles(rng)
    other = np.array([0.0, 0.1, 0.35, 0.7])
    cells = rng.dirichlet(np.ones(len(TYPES)), size=len(other)) * (1 - other)[:, None]
    features = _mixture(signature, other_profile, cells, other)
    fit = _fit(signature, envelope_weight, housekeeping)
    np.testing.assert_allclose(fit.estimate(features), other, atol=1e-9)
    # genes a bulk lacks are not read as other cells
    partial = features.copy()
    partial[:, 90:100 if not housekeeping else 95] = np.nan
    np.testing.assert_allclose(fit.estimate(partial), other, atol=1e-9)
    # a bulk on another scale (counts, not CPM) gives the same answer
    np.testing.assert_allclose(fit.estimate(features * 37.0), other, atol=1e-9)


def test_other_cells_the_markers_cannot_see_are_missed_by_the_unconstrained_fit():
    """The fit's assumption matters: other cells expressing one type's markers are partly
    explained as that type (what the held-out-type benchmark measures)."""
    rng = np.random.default_rng(1)
    signature, _ = _profiles(rng)
    like_b = signature["B"].to_numpy()  # other cells with B cells' profile
    cells = np.array([[0.3, 0.0, 0.2]])
    estimate = _fit(signature, 1.0).estimate(_mixture(signature, like_b, cells, np.array([0.5])))
    assert estimate[0] < 0.05


def test_housekeeping_genes_are_shared_stable_and_not_mitochondrial_or_ribosomal():
    signature = pd.DataFrame({"A": [50.0, 50.0, 50.0, 50.0, 1.0, 500.0], "B": [60.0, 40.0, 55.0, 45.0, 1.0, 5.0]},
                             index=["ACTB", "MT-CO1", "RPL13", "RPA1", "LOW", "VAR"])
    assert housekeeping_rows(signature, 5.0, 10.0).tolist() == [0, 3]  # RPA1 is not a ribosomal protein
    with pytest.raises(DeconflowError, match="no gene is expressed by every cell type"):
        housekeeping_rows(signature, 100.0, 10.0)


def test_to_other_cells_converts_mrna_with_the_sizes():
    # mRNA: T 0.2, B 0.4, other 0.4 -> cells ∝ 0.2/1000, 0.4/2000, 0.4/500
    value = to_other_cells(np.array([[0.2, 0.4, 0.0]]), np.array([0.4]), SIZES, 500.0)
    assert value[0] == pytest.approx(0.0008 / (0.0002 + 0.0002 + 0.0008))


def test_specific_markers_meet_the_bounds_and_a_type_without_any_is_refused():
    signature = pd.DataFrame({"A": [100.0, 10.0, 50.0, 0.0], "B": [0.0, 10.0, 40.0, 200.0]}, index=list("wxyz"))
    rows = specific_marker_rows(signature.to_numpy(), 5, 3.0, 5.0)
    assert rows.tolist() == [0, 3]  # x: no fold change, y: log2(51/41) < 3
    with pytest.raises(DeconflowError, match="'A'.*no gene"):
        specific_marker_rows(signature.to_numpy(), 5, 3.0, 150.0, ["A", "B"])
    # the calibration's mode: A takes its genes of highest fold change (w first, z last), B keeps z
    relaxed = specific_marker_rows(signature.to_numpy(), 1, 3.0, 150.0, ["A", "B"], strict=False)
    assert relaxed.tolist() == [0, 3]


def test_absolute_fractions_sum_to_one():
    proportions = pd.DataFrame([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]], columns=TYPES, index=["s1", "s2"])
    table = absolute_fractions(proportions, np.array([0.25, 0.0]))
    assert list(table.columns) == TYPES + [OTHER_COLUMN]
    np.testing.assert_allclose(table.sum(axis=1), 1.0)
    np.testing.assert_allclose(table.loc["s1", TYPES], [0.375, 0.225, 0.15])
    np.testing.assert_allclose(table.loc["s2"].to_numpy(), [0.1, 0.1, 0.8, 0.0])


def _calibration_by_hand(fit, scores, flag_min=0.05):
    return {"format": 1, "settings": {"flag_min_fraction": flag_min}, "seed": 0, "replicates": 4,
            "gene_drop_fraction": 0.25, "spread_floor": 0.01, "scores": sorted(scores), "fit": fit.state()}


def test_flag_when_the_lower_bound_is_clearly_above_zero():
    rng = np.random.default_rng(2)
    signature, other_profile = _profiles(rng)
    other = np.array([0.0, 0.02, 0.4])
    cells = np.array([[0.5, 0.3, 0.2]]) * (1 - other)[:, None]
    features = _mixture(signature, other_profile, cells, other)
    fit = _fit(signature)
    table = other_cells_table(_calibration_by_hand(fit, np.linspace(0, 2, 50)), features, signature.index, 0.9)
    np.testing.assert_allclose(table["other_cells"], other, atol=1e-9)
    half = table["other_cells_upper"] - table["other_cells"]  # q·(spread + floor), q the 46th of 50 scores
    assert (half >= 45 / 49 * 2 * 0.01 - 1e-12).all()
    assert (table["other_cells_lower"] <= table["other_cells"]).all()
    assert table["cells_outside_reference"].tolist() == [False, False, True]
    assert (table["cells_outside_reference"] == (table["other_cells_lower"] > 0.05)).all()
    # wide intervals (large scores): nothing is clearly above zero
    wide = other_cells_table(_calibration_by_hand(fit, np.linspace(0, 50, 50)), features, signature.index, 0.9)
    assert not wide["cells_outside_reference"].any()


def _reference_cells(rng, signature, other_profile, per_type=30, depth=3000):
    """Raw counts of single cells drawn from each type's profile (and an extra type 'X' with
    the other-cell profile), genes x signature genes."""
    profiles = {**{t: signature[t].to_numpy() for t in signature.columns}, "X": other_profile}
    rows, labels = [], []
    for name, profile in profiles.items():
        rows.append(rng.poisson(profile / 1e6 * depth, size=(per_type, len(profile))))
        labels += [name] * per_type
    return sp.csr_matrix(np.vstack(rows).astype(np.float32)), np.array(labels)


def test_calibration_holds_out_every_type_and_round_trips(tmp_path):
    rng = np.random.default_rng(3)
    signature, other_profile = _profiles(rng)
    with_x = signature.assign(X=other_profile)
    counts, labels = _reference_cells(rng, signature, other_profile)
    sizes = np.append(SIZES, 1500.0)
    settings = {"marker_genes_per_type": 20, "min_log2_fold_change": 3.0, "min_marker_cpm": 1.0, "mixtures_per_type": 12}
    mixture = MixtureSettings(cells_per_mixture=200)
    calibration = calibrate(with_x, sizes, counts, labels, settings=settings, interval_settings={"replicates": 3},
                            mixture_settings=mixture, seed=5)
    assert set(calibration["validation"]) == {"T", "B", "Mono", "X"}
    assert len(calibration["scores"]) == 4 * 12 and calibration["scores"] == sorted(calibration["scores"])
    # X expresses no marker of the other types: held out, it is found up to sampling noise
    assert calibration["validation"]["X"]["mae"] < 0.1
    assert calibration == calibrate(with_x, sizes, counts, labels, settings=settings, interval_settings={"replicates": 3},
                                    mixture_settings=mixture, seed=5)  # deterministic
    path = tmp_path / "other_cells.json"
    write_calibration(calibration, path)
    assert read_other_cells(path, ["T", "B", "Mono", "X"]) == json.loads(json.dumps(calibration))
    with pytest.raises(DeconflowError, match="other-cells calibration was made for cell types"):
        read_other_cells(path, TYPES)
    with pytest.raises(DeconflowError, match="does not exist"):
        read_other_cells(tmp_path / "missing.json")


def test_held_out_signature_drops_the_type_and_its_sibling_pair():
    signature = pd.DataFrame(np.ones((3, 3)), columns=["CD4", "Treg", "B"])
    signature.attrs["cell_library_size"] = pd.Series([1.0, 2.0, 3.0], index=signature.columns)
    reduced, linear_fit = held_out_signature(signature, "Treg", {"siblings": [["CD4", "Treg"]]})
    assert list(reduced.columns) == ["CD4", "B"] and reduced.attrs["cell_library_size"].tolist() == [1.0, 3.0]
    assert linear_fit["siblings"] == []


def test_cli_absolute_fractions_and_qc_columns_match_the_library(tmp_path):
    rng = np.random.default_rng(4)
    signature, other_profile = _profiles(rng)
    model = NNLSModel(signature, normalization="cpm")
    models = tmp_path / "results" / "models"
    (models / "nnls").mkdir(parents=True)
    model_path = models / "nnls" / "checkpoint_best.pt"
    save_checkpoint(model.checkpoint(), model_path)
    truth = rng.dirichlet(np.ones(len(TYPES)), size=60)
    validation = truth @ signature.to_numpy().T * np.exp(0.2 * rng.standard_normal((60, len(signature))))
    (models / "nnls" / "calibration.json").write_text(json.dumps(calibrate_intervals(model, validation, truth, {"replicates": 3})))
    fit = _fit(signature)
    write_calibration(_calibration_by_hand(fit, np.linspace(0, 2, 50)), models / "other_cells.json")
    other = np.array([0.0, 0.3])
    cells = np.array([[0.2, 0.3, 0.5]]) * (1 - other)[:, None]
    bulk = pd.DataFrame(_mixture(signature, other_profile, cells, other).T, index=signature.index, columns=["a", "b"])
    bulk_path = tmp_path / "bulk.tsv"
    bulk.to_csv(bulk_path, sep="\t")
    library = deconvolve_file(model_path, bulk_path, tmp_path / "lib" / "proportions.csv", min_overlap=10, qc=True,
                              intervals=0.9, absolute=True)
    assert cli.main(["deconvolve", "--model", str(model_path), "--bulk", str(bulk_path), "--out",
                     str(tmp_path / "cli" / "proportions.csv"), "--min-overlap", "10", "--qc", "--intervals", "--absolute",
                     "--gene-table", ""]) == 0
    for name in ("proportions.csv", "qc.csv", "intervals.csv"):
        assert (tmp_path / "lib" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes()
    assert list(library.columns) == TYPES + [OTHER_COLUMN]
    np.testing.assert_allclose(library.sum(axis=1), 1.0)
    np.testing.assert_allclose(library[OTHER_COLUMN], other, atol=1e-9)
    qc = pd.read_csv(tmp_path / "cli" / "qc.csv", keep_default_na=False).set_index("sample_id")
    at = list(qc.columns).index("flag")
    assert list(qc.columns[at - 3:at + 1]) == ["other_cells", "other_cells_lower", "other_cells_upper", "flag"]
    assert "cells_outside_reference" in qc.loc["b", "flag"] and "cells_outside_reference" not in qc.loc["a", "flag"]
    # without --absolute proportions.csv keeps its meaning: the reference's types, summing to 1
    relative = deconvolve_file(model_path, bulk_path, tmp_path / "rel" / "proportions.csv", min_overlap=10)
    assert list(relative.columns) == TYPES
    np.testing.assert_allclose(relative.sum(axis=1), 1.0)
    np.testing.assert_allclose(library[TYPES].to_numpy(), relative.to_numpy() * (1 - other)[:, None], atol=1e-12)
    # --absolute without a calibration file is one clear error
    (models / "other_cells.json").unlink()
    with pytest.raises(DeconflowError, match="other-cells calibration file does not exist"):
        deconvolve_file(model_path, bulk_path, tmp_path / "x" / "proportions.csv", min_overlap=10, absolute=True)


def test_foreign_type_mixtures_hold_the_mrna_share_of_the_cell_fraction():
    """The benchmark's 'type from another dataset' mixtures (issue 33): a profile at cell fraction u
    makes up u·c_f / (u·c_f + (1 − u)·c_b) of the mRNA, profile genes the bulk lacks are dropped."""
    from deconflow.benchmarks.other_cells import flow_mrna_per_cell, foreign_mixtures

    bulk = pd.DataFrame({"s1": [10.0, 30.0, 0.0], "s2": [1.0, 1.0, 2.0]}, index=["A", "B", "C"])
    profile = pd.Series([0.0, 50.0, 50.0, 900.0], index=["A", "B", "C", "ONLY_IN_PROFILE"])
    mrna = np.array([0.4, 0.8])
    mixed = foreign_mixtures(bulk, profile, 0.5, mrna, 0.2)
    share = 0.5 * 0.2 / (0.5 * 0.2 + 0.5 * mrna)
    expected_s1 = (1 - share[0]) * np.array([0.25, 0.75, 0.0]) * 1e6 + share[0] * np.array([0.0, 0.05, 0.05]) * 1e6
    np.testing.assert_allclose(mixed["s1"].to_numpy(), expected_s1)
    assert list(mixed.index) == ["A", "B", "C"]
    np.testing.assert_allclose(foreign_mixtures(bulk, profile, 0.0, mrna, 0.2).sum().to_numpy(), [1e6, 1e6])
    truth = pd.DataFrame({"Monocytes": [0.5, 0.0], "CD4Tcells": [0.5, 0.5], "Unknown": [0.0, 0.5]}, index=["s1", "s2"])
    np.testing.assert_allclose(flow_mrna_per_cell(truth, ["s1", "s2"]), [(1.4196 + 0.3952) / 2, (0.3952 + 0.4) / 2])
    np.testing.assert_allclose(flow_mrna_per_cell(None, ["s1"]), [0.4])


def test_absorbable_share_is_what_the_other_types_can_hide_under_the_held_out_profile():
    """U = 0.6·A + 0.4·(genes only U has): A can explain 0.6 of U's mRNA under its profile, B (a
    gene U lacks) none; a tolerance lets more hide, and a type with a gene nobody else has
    absorbs nothing of the others."""
    from deconflow.benchmarks.other_cells import absorbable_share

    a = np.array([400.0, 300.0, 300.0, 0.0, 0.0, 0.0])
    b = np.array([0.0, 200.0, 300.0, 0.0, 500.0, 0.0])
    private = np.array([0.0, 0.0, 0.0, 1000.0, 0.0, 0.0])
    u = 0.6 * a / a.sum() + 0.4 * private / private.sum()
    signature = pd.DataFrame({"A": a, "B": b, "U": u * 1e6}, index=[f"g{i}" for i in range(6)])
    assert absorbable_share(signature, "U") == pytest.approx(0.6)
    assert absorbable_share(signature, "U", relative_tolerance=0.5) == pytest.approx(0.9)
    assert absorbable_share(signature, "A") == pytest.approx(0.0, abs=1e-12)


def test_pool_noise_is_zero_for_exact_mixtures_and_the_relative_sd_otherwise():
    from deconflow.benchmarks.other_cells import pool_noise

    rng = np.random.default_rng(0)
    profiles = rng.gamma(1.0, 50.0, size=(400, 3))
    signature = pd.DataFrame(profiles / profiles.sum(axis=0) * 1e6, columns=TYPES)
    fractions = rng.dirichlet(np.ones(3), size=50)
    mrna = fractions * SIZES / (fractions * SIZES).sum(axis=1, keepdims=True)
    exact = mrna @ signature.to_numpy().T
    table = pool_noise(signature, SIZES, {"T": (exact, fractions)}, bins=4)
    np.testing.assert_allclose(table["relative_sd"], 0.0, atol=1e-9)
    noisy = exact * rng.normal(1.0, 0.1, size=exact.shape)
    table = pool_noise(signature, SIZES, {"T": (noisy, fractions)}, bins=4)
    assert table["relative_sd"].between(0.08, 0.12).all(), table
