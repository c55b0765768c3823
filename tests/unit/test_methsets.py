"""Methylation models on real bisulfite reads (issue 32), read from ../shared/methsets by path.

Skipped, with the reason, when the folder (or the embedded atlas of `make run`) is absent: the
data are never copied into the repository. $DECONFLOW_METHSETS overrides the folder.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deconflow.benchmarks.real_methylation import ROADMAP_TISSUES, draw_read_mixture, find_methsets, read_counts, run_models
from deconflow.deconvolve import deconvolve_file
from deconflow.methylation import read_atlas
from deconflow.models import save_checkpoint
from deconflow.models.nnls import NNLSModel
from deconflow.models.nnls_reads import ReadAwareNNLSModel

ATLAS = Path(__file__).resolve().parents[2] / "resources" / "loyfer2023" / "atlas.tsv"
METHSETS = find_methsets()

pytestmark = [
    pytest.mark.skipif(METHSETS is None, reason="no methsets folder (../shared/methsets or $DECONFLOW_METHSETS): real reads not available"),
    pytest.mark.skipif(not ATLAS.is_file(), reason=f"{ATLAS} absent: run `make run` (or snakemake {ATLAS.relative_to(ATLAS.parents[2])})"),
]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    atlas = read_atlas(ATLAS)
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for name, model in {"nnls": NNLSModel(atlas, normalization="beta"), "nnls_reads": ReadAwareNNLSModel(atlas)}.items():
        paths[name] = folder / f"{name}.pt"
        save_checkpoint(model.checkpoint(), paths[name])
    return paths


@pytest.mark.parametrize("model", ["nnls", "nnls_reads"])
def test_roadmap_panel_files_are_read_with_default_flags_and_tissues_follow_the_truth(tmp_path, checkpoints, model):
    """The UXM panel (~500 of 7,693 regions) was refused by the 1000-region floor; now every
    file is read, each pure tissue's own group is its largest and the mixtures' groups follow
    the truth (r ≥ 0.9)."""
    out = tmp_path / "p.csv"
    deconvolve_file(checkpoints[model], str(METHSETS / "uxm_roadmap_cov" / "*.cov"), out, qc=True)
    tissues = pd.read_csv(tmp_path / "tissues.csv", index_col=0)
    truth = pd.read_csv(METHSETS / "uxm_roadmap_truth.tsv", sep="\t", index_col=0)
    groups = list(ROADMAP_TISSUES.values())
    for sample in truth.index[truth["kind"] == "pure_tissue"]:
        own = ROADMAP_TISSUES[truth.loc[sample, list(ROADMAP_TISSUES)].astype(float).idxmax()]
        assert tissues.loc[sample, groups].astype(float).idxmax() == own, (sample, tissues.loc[sample, groups])
    mixtures = truth.index[truth["kind"] == "read_mixture"]
    for column, group in ROADMAP_TISSUES.items():
        r = np.corrcoef(truth.loc[mixtures, column], tissues.loc[mixtures, group])[0, 1]
        assert r >= 0.9, (model, group, r)
    qc = pd.read_csv(tmp_path / "qc.csv", index_col=0)
    assert (qc["covered_regions"] < 600).all() and qc["no_evidence_types"].str.contains("gallbladder").all()
    assert np.isnan(pd.read_csv(out, index_col=0)["gallbladder"]).all()  # no covered marker: no evidence, not 0


@pytest.mark.parametrize("model", ["nnls", "nnls_reads"])
def test_celfie_sorted_t_cells_come_out_t_cells(tmp_path, checkpoints, model):
    files = [str(METHSETS / "celfie_wgbs_cov" / f"{s}.cov") for s in ("tcell", "neutrophil", "monocyte")]
    table = deconvolve_file(checkpoints[model], files, tmp_path / "p.csv")
    assert table.loc["tcell"].idxmax() == "T-cell" and table.loc["tcell", "T-cell"] >= 0.9
    assert table.loc["neutrophil"].idxmax() == "granulocyte" and table.loc["monocyte"].idxmax() == "monocyte"


def test_ten_percent_liver_read_mixture_is_detected_and_pure_pancreas_has_no_liver(checkpoints):
    atlas = read_atlas(ATLAS)
    samples, methylated, total = read_counts(METHSETS / "uxm_roadmap_counts.tsv", atlas.index)
    liver, pancreas = samples.index("Liver_STL011"), samples.index("Pancreas_STL003")
    rng = np.random.default_rng(1)
    draws = [draw_read_mixture(methylated[liver], total[liver], methylated[pancreas], total[pancreas], f, rng) for f in (0.1, 0.0)]
    m, t = np.array([d[0] for d in draws]), np.array([d[1] for d in draws])
    assert np.all(t <= total[pancreas] + total[liver]) and np.all(m <= t)
    results = run_models({"nnls_reads": ReadAwareNNLSModel(atlas)}, m, t, ["spiked", "null"])
    detection = results["_detection"].set_index(["sample_id", "level", "name"])
    assert detection.loc[("spiked", "tissue", "liver"), "detected"]
    assert not detection.loc[("null", "tissue", "liver"), "detected"]
    tissues = results["nnls_reads"][1]
    assert 0.03 < tissues.loc["spiked", "liver"] < 0.15 and tissues.loc["null", "liver"] == 0
