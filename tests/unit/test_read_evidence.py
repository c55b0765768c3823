"""Methylation reads on panels (issue 32): evidence per type, no fixed floor, detection test."""

import numpy as np
import pandas as pd
import pytest

from deconflow.deconvolve import deconvolve_file
from deconflow.errors import DeconflowError
from deconflow.io.methylation_calls import write_calls
from deconflow.models import save_checkpoint
from deconflow.models.nnls import NNLSModel
from deconflow.models.nnls_reads import ReadAwareNNLSModel
from deconflow.models.sparse import DEFAULTS, SparseModel, _build_net
from deconflow.read_evidence import analyse_reads, check_tissues, marker_regions, read_fit, type_evidence

from test_methylation import make_atlas

TISSUES = {"blood": ["granulocyte", "monocyte", "T-cell"], "liver": ["hepatocyte"], "brain": ["neuron"],
           "kidney": ["kidney"], "lung": ["lung"], "colon": ["colon"]}


def _panel(atlas, skip=(), per_type=3):
    """Rows of a panel: the first ``per_type`` marker regions of each type not in ``skip``, and
    no region that is a marker of a skipped type."""
    markers = marker_regions(atlas.to_numpy())
    skipped = [list(atlas.columns).index(t) for t in skip]
    rows = set()
    for k in range(atlas.shape[1]):
        if k in skipped:
            continue
        candidates = [r for r in np.flatnonzero(markers[:, k]) if not markers[r, skipped].any()]
        rows.update(candidates[:per_type])
    return np.array(sorted(rows))


def _write_sample(path, atlas, rows, betas, depth):
    starts = [int(r.split(":")[1].split("-")[0]) for r in atlas.index[rows]]
    total = np.full(len(rows), depth)
    methylated = np.rint(betas[rows] * depth).astype(np.int64)
    assert np.allclose(methylated, betas[rows] * depth)  # noise-free: integer counts
    write_calls(path, ["chr1"] * len(rows), [s + 1 for s in starts], methylated, total, "bismark")


def _untrained_sparse(atlas):
    settings = dict(DEFAULTS)
    net = _build_net(atlas.shape[0], atlas.shape[1], settings, "beta")
    net.set_statistics(atlas.to_numpy(), np.tile(atlas.to_numpy().mean(axis=1), (4, 1)))
    return SparseModel(net, settings, list(atlas.index), list(atlas.columns), "beta", atlas.to_numpy())


def test_panel_of_a_few_percent_of_regions_is_read_and_noise_free_counts_recovered_exactly(tmp_path):
    """A panel covering ~5 % of the atlas (far below the former 1000-region floor) is read by
    every methylation model with default flags, and noise-free counts are recovered exactly."""
    atlas = make_atlas(n_regions=600, seed=21)
    rows = _panel(atlas)
    assert len(rows) < 0.06 * len(atlas)
    truth = np.zeros(atlas.shape[1])
    truth[[0, 3, 6]] = [0.6, 0.3, 0.1]  # granulocyte, hepatocyte, lung
    _write_sample(tmp_path / "panel.cov", atlas, rows, atlas.to_numpy() @ truth, 10_000)
    models = {"nnls": NNLSModel(atlas, normalization="beta"), "nnls_reads": ReadAwareNNLSModel(atlas, tissues=TISSUES),
              "sparse": _untrained_sparse(atlas)}
    for name, model in models.items():
        save_checkpoint(model.checkpoint(), tmp_path / f"{name}.pt")
        out = tmp_path / name / "p.csv"
        out.parent.mkdir()
        table = deconvolve_file(tmp_path / f"{name}.pt", tmp_path / "panel.cov", out, qc=True,
                                methylation_evidence={"tissues": TISSUES})
        np.testing.assert_allclose(table.to_numpy()[0], truth, atol=1e-8, err_msg=name)
        detection = pd.read_csv(out.with_name("detection.csv"))
        called = detection[(detection["level"] == "tissue") & detection["detected"]]["name"].tolist()
        assert sorted(called) == ["blood", "liver", "lung"], (name, called)
        qc = pd.read_csv(out.with_name("qc.csv"))
        assert qc.loc[0, "covered_regions"] == len(rows) and qc.loc[0, "types_with_evidence"] == atlas.shape[1]


def test_a_type_without_covered_marker_is_no_evidence_not_zero(tmp_path):
    atlas = make_atlas(n_regions=600, seed=22)
    rows = _panel(atlas, skip=("kidney",))
    truth = np.zeros(atlas.shape[1])
    truth[[0, 4]] = [0.7, 0.3]  # granulocyte + neuron; kidney absent and not covered
    _write_sample(tmp_path / "s.cov", atlas, rows, atlas.to_numpy() @ truth, 10_000)
    save_checkpoint(ReadAwareNNLSModel(atlas, tissues=TISSUES).checkpoint(), tmp_path / "m.pt")
    table = deconvolve_file(tmp_path / "m.pt", tmp_path / "s.cov", tmp_path / "p.csv", qc=True,
                            methylation_evidence={"tissues": TISSUES})
    assert np.isnan(table.loc["s", "kidney"])
    others = table.drop(columns="kidney").to_numpy()[0]
    np.testing.assert_allclose(others, np.delete(truth, list(atlas.columns).index("kidney")), atol=1e-8)
    written = pd.read_csv(tmp_path / "p.csv", index_col=0)
    assert np.isnan(written.loc["s", "kidney"]) and written.loc["s", "granulocyte"] == pytest.approx(0.7)
    tissues = pd.read_csv(tmp_path / "tissues.csv", index_col=0)
    assert np.isnan(tissues.loc["s", "kidney"]) and tissues.loc["s", "brain"] == pytest.approx(0.3)
    qc = pd.read_csv(tmp_path / "qc.csv")
    assert qc.loc[0, "no_evidence_types"] == "kidney"
    detection = pd.read_csv(tmp_path / "detection.csv")
    kidney = detection[(detection["name"] == "kidney")]
    assert not kidney["evidence"].any() and not kidney["detected"].any() and kidney["estimate"].isna().all()
    assert (kidney[kidney["level"] == "cell_type"]["regions"] == 0).all()


def test_refusal_names_the_cause_when_no_covered_region_is_a_marker(tmp_path):
    atlas = make_atlas(n_regions=200, seed=23)
    markers = marker_regions(atlas.to_numpy())
    plain = np.flatnonzero(~markers.any(axis=1))[:5]
    _write_sample(tmp_path / "s.cov", atlas, plain, np.full(len(atlas), 0.5), 100)
    save_checkpoint(ReadAwareNNLSModel(atlas).checkpoint(), tmp_path / "m.pt")
    with pytest.raises(DeconflowError, match=r"s.cov: calls on 5 atlas regions, but none .* marker region .* Fix: use a panel"):
        deconvolve_file(tmp_path / "m.pt", tmp_path / "s.cov", tmp_path / "p.csv")
    assert not (tmp_path / "p.csv").exists()


def test_detection_holds_its_false_call_rate_on_binomial_nulls_and_finds_five_percent():
    """Binomial counts at depth 300 from a fixed atlas: absent tissues are called at about the
    stated rate, a tissue at 5 % in nearly every sample."""
    atlas = make_atlas(n_regions=400, seed=24)
    S = atlas.to_numpy()
    rng = np.random.default_rng(0)
    truth = np.zeros(S.shape[1])
    truth[[0, 1, 2]] = [0.5, 0.3, 0.15]
    truth[3] = 0.05  # hepatocyte
    n = np.full((200, S.shape[0]), 300)
    m = rng.binomial(n, S @ truth)
    result = analyse_reads(S, atlas.columns, m / n, n, TISSUES, {"false_call_rate": 0.01})
    tissue = result["detection"][result["detection"]["level"] == "tissue"]
    liver = tissue[tissue["name"] == "liver"]["detected"]
    absent = tissue[tissue["name"].isin(["brain", "kidney", "lung", "colon"])]["detected"]
    assert liver.mean() >= 0.9
    assert absent.mean() <= 0.03
    inside = (liver.index >= 0) & (tissue.loc[liver.index, "lower"] <= 0.05) & (tissue.loc[liver.index, "upper"] >= 0.05)
    assert inside.mean() >= 0.8  # 90 % Wald intervals of the tissue share


def test_evidence_counts_and_tissue_mapping_checks():
    atlas = make_atlas(n_regions=100, seed=25)
    markers = marker_regions(atlas.to_numpy())
    coverage = np.zeros((1, 100))
    coverage[0, np.flatnonzero(markers[:, 0])[:2]] = [5, 7]
    ev = type_evidence(coverage, markers)
    assert ev["regions"][0, 0] == 2 and ev["reads"][0, 0] == 12 and ev["evidence"][0, 0]
    assert read_fit(atlas.to_numpy(), np.full(100, np.nan), np.zeros(100))["coef"].sum() == 0
    with pytest.raises(DeconflowError, match="not a cell type of the atlas"):
        check_tissues({"liver": ["hepatocytes"]}, atlas.columns)
    with pytest.raises(DeconflowError, match="in two tissues"):
        check_tissues({"a": ["colon"], "b": ["colon"]}, atlas.columns)


def test_a_betas_table_writes_the_same_files_tissue_shares_and_a_detection_table_without_rows(tmp_path):
    """Every methylation deconvolution writes tissues.csv and detection.csv (rule
    deconvolve_bulk_methylation declares them): a betas table gets the proportions summed per
    tissue and the detection columns of the calls path with no rows (no read counts, no test)."""
    from deconflow.deconvolve import DETECTION_COLUMNS

    atlas = make_atlas(n_regions=600, seed=24)
    truth = np.zeros(atlas.shape[1])
    truth[[0, 1, 3]] = [0.5, 0.2, 0.3]  # granulocyte, monocyte (blood), hepatocyte (liver)
    betas = pd.DataFrame({"plasma": atlas.to_numpy() @ truth}, index=atlas.index)
    betas.index.name = "region"
    betas.to_csv(tmp_path / "betas.tsv", sep="\t")
    save_checkpoint(NNLSModel(atlas, normalization="beta").checkpoint(), tmp_path / "m.pt")
    deconvolve_file(tmp_path / "m.pt", tmp_path / "betas.tsv", tmp_path / "p.csv", 100, qc=True,
                    methylation_evidence={"tissues": TISSUES})
    tissues = pd.read_csv(tmp_path / "tissues.csv", index_col=0)
    assert list(tissues.columns) == list(TISSUES)
    assert tissues.loc["plasma", "blood"] == pytest.approx(0.7, abs=1e-6) and tissues.loc["plasma", "liver"] == pytest.approx(0.3, abs=1e-6)
    detection = pd.read_csv(tmp_path / "detection.csv")
    assert list(detection.columns) == DETECTION_COLUMNS and detection.empty
    # the calls path writes the same columns
    rows = _panel(atlas)
    _write_sample(tmp_path / "panel.cov", atlas, rows, atlas.to_numpy() @ truth, 10_000)
    deconvolve_file(tmp_path / "m.pt", tmp_path / "panel.cov", tmp_path / "calls" / "p.csv", methylation_evidence={"tissues": TISSUES})
    assert list(pd.read_csv(tmp_path / "calls" / "detection.csv").columns) == DETECTION_COLUMNS
